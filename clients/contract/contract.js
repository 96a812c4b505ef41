// The protocol contract (asyncapi.yaml beside this file) as a validator: which events exist in
// which direction, and the JSON Schema of each payload, compiled with ajv. The tests run every
// payload their clients send and receive through it, so the document cannot drift from the server.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import Ajv from 'ajv';

export const DOCUMENT_PATH = fileURLToPath(new URL('./asyncapi.yaml', import.meta.url));

/** The AsyncAPI document as plain data. */
export function loadDocument(path = DOCUMENT_PATH) {
  return YAML.parse(readFileSync(path, 'utf8'));
}

/** The value a local `$ref` (`#/a/b`) points at in `doc`. */
export function resolveRef(doc, ref) {
  if (!ref.startsWith('#/')) throw new Error(`only local references are used: ${ref}`);
  let node = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node == null || !(key in node)) throw new Error(`unresolved reference ${ref}`);
    node = node[key];
  }
  return node;
}

/** Follows `$ref`s until a value that is not a reference. */
function deref(doc, node) {
  while (node && typeof node.$ref === 'string') node = resolveRef(doc, node.$ref);
  return node;
}

const SCHEMA_PREFIX = '#/components/schemas/';

/** The name of the components schema a message payload refers to (payloads are always named). */
function payloadName(message) {
  const ref = message.payload?.$ref;
  if (message.payload && !ref?.startsWith(SCHEMA_PREFIX)) {
    throw new Error(`the payload of ${message.name ?? message.title} must be a $ref to ${SCHEMA_PREFIX}…`);
  }
  return ref ? ref.slice(SCHEMA_PREFIX.length) : null;
}

/**
 * The Socket.IO events of the document: `{client, server}`, each a Map from the event name to
 * `{name, operation, summary, description, schema, payload}`, where `schema` is the payload's
 * components schema name (null without payload) and `payload` is `required`, `optional` or
 * `none`. Client events are the `receive` operations on the socket channel, server events the
 * `send` ones. `ack` is the schema name of the acknowledgement reply.
 */
export function socketEvents(doc) {
  const client = new Map();
  const server = new Map();
  let ack = null;
  for (const [operation, op] of Object.entries(doc.operations)) {
    if (op.channel.$ref !== '#/channels/socket') continue;
    const table = op.action === 'receive' ? client : server;
    for (const ref of op.messages) {
      const message = deref(doc, ref);
      if (!message.name) throw new Error(`operation ${operation}: its message has no event name`);
      if (table.has(message.name)) throw new Error(`event ${message.name} is described twice`);
      const schema = payloadName(message);
      table.set(message.name, {
        name: message.name,
        operation,
        summary: message.summary,
        description: message.description,
        schema,
        payload: !schema ? 'none' : message['x-payload-optional'] ? 'optional' : 'required',
      });
    }
    if (op.reply) {
      const replies = op.reply.messages.map((m) => payloadName(deref(doc, m)));
      if (replies.length !== 1 || (ack && ack !== replies[0])) {
        throw new Error(`operation ${operation}: every client event has the one acknowledgement`);
      }
      ack = replies[0];
    }
  }
  return { client, server, ack };
}

/**
 * The HTTP endpoints of the document: a Map from the path to `{path, operation, method,
 * schemas}`, `schemas` being the names of the bodies it may answer with.
 */
export function httpEndpoints(doc) {
  const out = new Map();
  for (const [operation, op] of Object.entries(doc.operations)) {
    const channel = deref(doc, op.channel);
    if (!op.bindings?.http) continue;
    const schemas = (op.reply?.messages ?? []).map((m) => payloadName(deref(doc, m)));
    out.set(channel.address, { path: channel.address, operation, method: op.bindings.http.method, schemas });
  }
  return out;
}

/** `doc`'s components schemas with their references pointed at `#/definitions/…`, for ajv. */
function definitions(doc) {
  const rewrite = (node) => {
    if (Array.isArray(node)) return node.map(rewrite);
    if (!node || typeof node !== 'object') return node;
    const out = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref') {
        if (!v.startsWith(SCHEMA_PREFIX)) throw new Error(`a schema may only refer to ${SCHEMA_PREFIX}…: ${v}`);
        out.$ref = `#/definitions/${v.slice(SCHEMA_PREFIX.length)}`;
      } else {
        out[k] = rewrite(v);
      }
    }
    return out;
  };
  return rewrite(doc.components.schemas);
}

const ROOT_ID = 'urn:roulette:contract';

/** Shortens a value for a message. */
function show(value) {
  let text;
  try {
    text = JSON.stringify(value, (_, v) => (typeof v === 'function' ? '[function]'
      : ArrayBuffer.isView(v) ? `[${v.constructor.name} of ${v.byteLength} bytes]` : v));
  } catch {
    text = String(value);
  }
  if (text === undefined) text = 'undefined';
  return text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

/** ajv's errors as one readable line each. */
function explain(errors) {
  return (errors ?? []).map((e) => {
    const where = e.instancePath || '(payload)';
    const extra = e.keyword === 'additionalProperties' ? ` (${e.params.additionalProperty})`
      : e.keyword === 'enum' ? ` (${e.params.allowedValues.join(', ')})`
        : e.keyword === 'const' ? ` (${JSON.stringify(e.params.allowedValue)})` : '';
    return `${where} ${e.message}${extra}`;
  }).join('; ');
}

/** The document compiled into validators. */
export class Contract {
  constructor(doc = loadDocument()) {
    this.doc = doc;
    const { client, server, ack } = socketEvents(doc);
    this.clientEvents = client;
    this.serverEvents = server;
    this.ackSchema = ack;
    this.http = httpEndpoints(doc);
    // Draft-07 (AsyncAPI's schema object is a superset of it), strict: an unknown keyword or a
    // misspelt one in the document is an error here instead of a constraint silently not held.
    this.ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
    this.ajv.addSchema({ $id: ROOT_ID, definitions: definitions(doc) });
    this.validators = new Map();
    for (const name of Object.keys(doc.components.schemas)) {
      this.validators.set(name, this.ajv.getSchema(`${ROOT_ID}#/definitions/${name}`));
    }
  }

  /** Errors of `value` against the components schema `name`, as text; null when it is valid. */
  check(name, value) {
    const validate = this.validators.get(name);
    if (!validate) throw new Error(`no schema ${name} in the contract`);
    return validate(value) ? null : explain(validate.errors);
  }

  /** Checks an event's arguments against its message: null, or why they do not fit. */
  #checkEvent(table, direction, event, args) {
    const spec = table.get(event);
    if (!spec) return `${direction} event "${event}" is not in the contract (payload ${show(args)})`;
    const fns = args.filter((a) => typeof a === 'function');
    if (fns.length) return `${direction} event "${event}" asks for an acknowledgement the contract does not describe`;
    // socket.io-client sends a trailing `undefined` as null: leave out what is not there.
    let given = args.length === 1 && args[0] === undefined ? [] : args;
    // Connection state recovery: a server event's offset follows its payload, as a string.
    if (direction === 'server → client' && given.length >= 1 && typeof given[given.length - 1] === 'string'
      && (given.length === 2 || spec.payload === 'none')) {
      given = given.slice(0, -1);
    }
    if (given.length > 1) return `${direction} event "${event}" has ${given.length} arguments, the contract one: ${show(args)}`;
    if (spec.payload === 'none') {
      return given.length ? `${direction} event "${event}" has no payload in the contract, got ${show(given[0])}` : null;
    }
    if (!given.length) {
      return spec.payload === 'optional' ? null : `${direction} event "${event}" needs a ${spec.schema} payload, got none`;
    }
    const errors = this.check(spec.schema, given[0]);
    return errors && `${direction} event "${event}" payload ${show(given[0])} does not match ${spec.schema}: ${errors}`;
  }

  /** A client → server event (the arguments after the name, without an ack callback). */
  checkClientEvent(event, args) {
    return this.#checkEvent(this.clientEvents, 'client → server', event, args);
  }

  /** A server → client event. */
  checkServerEvent(event, args) {
    return this.#checkEvent(this.serverEvents, 'server → client', event, args);
  }

  /** The arguments of an acknowledgement the server sent. */
  checkAck(args) {
    if (args.length !== 1) return `acknowledgement with ${args.length} arguments, the contract one: ${show(args)}`;
    const errors = this.check(this.ackSchema, args[0]);
    return errors && `acknowledgement ${show(args[0])} does not match ${this.ackSchema}: ${errors}`;
  }

  /** The JSON body of a GET of `path` (query left out): null, or why it does not fit. */
  checkHttp(path, body) {
    const endpoint = this.http.get(path);
    if (!endpoint) return `GET ${path} is not in the contract`;
    const failures = [];
    for (const schema of endpoint.schemas) {
      const errors = this.check(schema, body);
      if (!errors) return null;
      failures.push(`${schema}: ${errors}`);
    }
    return `GET ${path} body ${show(body)} matches none of its bodies: ${failures.join(' | ')}`;
  }
}

let shared;
/** One compiled contract per process. */
export function contract() {
  shared ??= new Contract();
  return shared;
}
