#!/usr/bin/env node
// Generates the TypeScript types (clients/types/index.d.ts) from the AsyncAPI document
// (asyncapi.yaml beside this file): one type per components schema, and the event maps that
// socket.io-client's typed `Socket<ServerToClientEvents, ClientToServerEvents>` takes.
//
//   node contract/generate-types.js           writes clients/types/index.d.ts
//   node contract/generate-types.js --check   exits 1 when the committed file is not what it would write
//
// It knows the part of JSON Schema the document uses (type, enum, const, properties, required,
// additionalProperties, items and tuples, anyOf/oneOf, $ref); a keyword it cannot turn into a
// type is an error, so the types cannot quietly say less than the schema. Constraints that
// TypeScript cannot express (pattern, minimum, maxLength, if/then/else, ...) stay in the schema
// and are checked at run time by ajv (contract.js).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadDocument, socketEvents, httpEndpoints } from './contract.js';

export const TYPES_PATH = fileURLToPath(new URL('../types/index.d.ts', import.meta.url));

const SCHEMA_PREFIX = '#/components/schemas/';

// Keywords that only describe or constrain values in ways a type does not carry.
const IGNORED = new Set([
  'description', 'title', 'examples', 'default', 'pattern', 'minLength', 'maxLength', 'minimum',
  'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'minItems', 'maxItems',
  'uniqueItems', 'format', 'if', 'then', 'else', 'additionalItems', 'deprecated',
]);
const HANDLED = new Set(['$ref', 'type', 'enum', 'const', 'properties', 'required',
  'additionalProperties', 'items', 'anyOf', 'oneOf']);

const isIdentifier = (s) => /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(s);
const key = (s) => (isIdentifier(s) ? s : JSON.stringify(s));

/** A JSDoc comment for `text` at `indent`, or nothing. */
function doc(text, indent = '') {
  if (!text) return '';
  const lines = String(text).trim().replace(/\*\//g, '*\\/').split('\n');
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} *${l ? ` ${l}` : ''}`).join('\n')}\n${indent} */\n`;
}

class Generator {
  constructor(document) {
    this.document = document;
    this.schemas = document.components.schemas;
    this.named = [];
  }

  /** The TypeScript type of `schema`; `where` names it in errors. `indent` is for object bodies. */
  type(schema, where, indent = '') {
    if (schema === true) return 'unknown';
    if (schema === false) return 'never';
    for (const k of Object.keys(schema)) {
      if (!HANDLED.has(k) && !IGNORED.has(k)) throw new Error(`${where}: keyword "${k}" has no TypeScript form here`);
    }
    if (schema.$ref) {
      if (!schema.$ref.startsWith(SCHEMA_PREFIX)) throw new Error(`${where}: $ref outside ${SCHEMA_PREFIX}`);
      const name = schema.$ref.slice(SCHEMA_PREFIX.length);
      if (!this.schemas[name]) throw new Error(`${where}: no schema ${name}`);
      return name;
    }
    if ('const' in schema) return JSON.stringify(schema.const);
    if (schema.enum) {
      const literals = schema.enum.map((v) => JSON.stringify(v));
      const line = literals.join(' | ');
      return line.length <= 80 ? line : literals.map((l) => `\n${indent}  | ${l}`).join('');
    }
    const variants = schema.oneOf ?? schema.anyOf;
    if (variants) {
      return variants.map((v, i) => {
        // A titled object variant becomes a named type of its own (`AckOk | AckRefused`).
        if (v.title && v.type === 'object') {
          this.declare(v.title, v, `${where}/${i}`);
          return v.title;
        }
        const t = this.type(v, `${where}/${i}`, indent);
        return /[|&]/.test(t) && !t.startsWith('{') ? `(${t})` : t;
      }).join(' | ');
    }
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (types.length > 1) {
      return types.map((t) => this.type({ ...schema, type: t }, where, indent)).join(' | ');
    }
    switch (types[0]) {
      case 'string': return 'string';
      case 'integer':
      case 'number': return 'number';
      case 'boolean': return 'boolean';
      case 'null': return 'null';
      case 'array': {
        if (Array.isArray(schema.items)) {
          return `[${schema.items.map((s, i) => this.type(s, `${where}/items/${i}`, indent)).join(', ')}]`;
        }
        const item = schema.items ? this.type(schema.items, `${where}/items`, indent) : 'unknown';
        return /[|&\s]/.test(item) && !item.startsWith('{') ? `Array<${item}>` : `${item}[]`;
      }
      case 'object': return this.object(schema, where, indent);
      case undefined:
        throw new Error(`${where}: a schema without a type`);
      default:
        throw new Error(`${where}: type ${types[0]}`);
    }
  }

  /** An object type's body. */
  object(schema, where, indent) {
    const inner = `${indent}  `;
    const required = new Set(schema.required ?? []);
    let body = '';
    for (const [name, prop] of Object.entries(schema.properties ?? {})) {
      body += doc(prop.description, inner);
      body += `${inner}${key(name)}${required.has(name) ? '' : '?'}: ${this.type(prop, `${where}/${name}`, inner)};\n`;
    }
    for (const name of required) {
      if (!(name in (schema.properties ?? {}))) throw new Error(`${where}: required "${name}" is not a property`);
    }
    const extra = schema.additionalProperties;
    if (extra === undefined) throw new Error(`${where}: say whether additionalProperties are allowed`);
    if (extra === true) {
      // No index signature: the DOM's RTCIceCandidateInit and RTCSessionDescriptionInit, being
      // interfaces, would not be assignable to one. Object types are open in TypeScript anyway.
      body += `${inner}// Other fields are allowed, and relayed as they are.\n`;
    } else if (extra !== false) {
      body += `${inner}[key: string]: ${this.type(extra, `${where}/*`, inner)};\n`;
    }
    return body ? `{\n${body}${indent}}` : '{}';
  }

  /** Adds `export interface` / `export type` for a named schema (once). */
  declare(name, schema, where) {
    if (this.named.some((n) => n.name === name)) return;
    const entry = { name, text: '' };
    this.named.push(entry);
    const type = this.type(schema, where);
    const comment = doc(schema.description);
    entry.text = schema.type === 'object' && !schema.oneOf && !schema.anyOf && type.startsWith('{')
      ? `${comment}export interface ${name} ${type}\n`
      : `${comment}export type ${name} =${type.startsWith('\n') ? '' : ' '}${type};\n`;
  }

  generate() {
    for (const [name, schema] of Object.entries(this.schemas)) this.declare(name, schema, `${SCHEMA_PREFIX}${name}`);
    const { client, server, ack } = socketEvents(this.document);
    const http = httpEndpoints(this.document);
    const eventDoc = (e) => doc([e.summary, e.description].filter(Boolean).join('\n\n'), '  ');
    const payloadParam = (e, withAck) => (e.payload === 'none' ? []
      : e.payload === 'optional' ? [withAck ? `payload: ${e.schema} | undefined` : `payload?: ${e.schema}`]
        : [`payload: ${e.schema}`]);
    const map = (events, withAck) => [...events.values()].map((e) => {
      const params = payloadParam(e, withAck);
      if (withAck) params.push(`ack: (reply: ${ack}) => void`);
      return `${eventDoc(e)}  ${key(e.name)}: (${params.join(', ')}) => void;\n`;
    }).join('');
    const { info } = this.document;
    return [
      '// Generated from clients/contract/asyncapi.yaml by clients/contract/generate-types.js: do not',
      '// edit by hand. Regenerate with `npm run generate:types --prefix clients`.',
      `// ${info.title} protocol ${info.version}.`,
      '',
      ...this.named.map((n) => n.text),
      doc('Events the server emits: `socket.on(name, (payload) => …)` on a\n`Socket<ServerToClientEvents, ClientToServerEvents>` from socket.io-client 4.')
        + `export interface ServerToClientEvents {\n${map(server, false)}}\n`,
      doc('Events a client emits: `socket.emit(name, payload)`.')
        + `export interface ClientToServerEvents {\n${map(client, false)}}\n`,
      doc([
        'The same events with the acknowledgement the server sends to an event emitted with a',
        'callback, for `emitWithAck`: view the socket as',
        '`Socket<ServerToClientEvents, ClientToServerEventsWithAck>` to await `Ack` replies.',
      ].join('\n')) + `export interface ClientToServerEventsWithAck {\n${map(client, true)}}\n`,
      `${doc('The names of the events the server emits.')}export type ServerEventName = keyof ServerToClientEvents;\n`,
      `${doc('The names of the events a client emits.')}export type ClientEventName = keyof ClientToServerEvents;\n`,
      doc('The JSON bodies of the HTTP endpoints (`GET`), by path.')
        + `export interface HttpBodies {\n${[...http.values()].map((e) => `  ${key(e.path)}: ${e.schemas.join(' | ')};\n`).join('')}}\n`,
    ].join('\n');
  }
}

/** The text of index.d.ts for the document. */
export function generateTypes(document = loadDocument()) {
  return new Generator(document).generate();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = generateTypes();
  if (process.argv.includes('--check')) {
    let current = '';
    try { current = readFileSync(TYPES_PATH, 'utf8'); } catch { /* missing */ }
    if (current !== text) {
      console.error(`${TYPES_PATH} is out of date: run \`npm run generate:types --prefix clients\``);
      process.exit(1);
    }
    console.log(`${TYPES_PATH} is up to date`);
  } else {
    writeFileSync(TYPES_PATH, text);
    console.log(`wrote ${TYPES_PATH}`);
  }
}
