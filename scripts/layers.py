#!/usr/bin/env python3
"""Checks that the crate's dependencies point one way.

Reads the item graph that `cargo modules dependencies` (cargo-modules 0.27, from crates.io) draws
for the library, lifts every "uses" edge to the top-level modules that hold its two ends, prints
the arrows, and fails when they form a cycle. Inside each top-level module it does the same one
level down: siblings (`cluster::inbox`, `cluster::worker`, ...) must not form a cycle; only a
module and its own parent may point at each other.

cargo-modules' own `--acyclic` flag counts a type and its methods as a cycle, so it cannot be
used as it is.

Usage: scripts/layers.py [graph.dot]   (without a file it runs cargo modules itself)
Also checks that no source file has more than 500 lines outside its `#[cfg(test)]` module.
"""

import os
import re
import subprocess
import sys

CRATE = "roulette"
MAX_LINES = 500
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')
MODULE = re.compile(r'^\s*"([^"]+)" \[label="[^"]*"[^\]]*\]; // "mod" node', re.M)


def graph_text(argv):
    if len(argv) > 1:
        with open(argv[1]) as f:
            return f.read()
    cmd = ["cargo", "modules", "dependencies", "--package", CRATE, "--lib",
           "--no-externs", "--no-sysroot"]
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("cargo not found")
    except subprocess.CalledProcessError as e:
        sys.exit(f"{' '.join(cmd)} failed (install it with: cargo install cargo-modules "
                 f"--version 0.27.0 --locked):\n{e.stderr[-2000:]}")


def path_of(node):
    parts = node.split("::")
    return parts[1:] if parts[0] == CRATE else None


def cycles(nodes, edges):
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    succ = {n: sorted(b for a, b in edges if a == n) for n in nodes}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def long_files(root="src"):
    """Source files over MAX_LINES lines, not counting their `#[cfg(test)]` modules."""
    bad = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs") or name == "tests.rs" or name.endswith("_tests.rs"):
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                lines = f.read().split("\n")
            n = 0
            skip = False
            depth = 0
            pending = False
            for line in lines:
                if not skip and line.strip() == "#[cfg(test)]":
                    pending = True
                    continue
                if pending and not skip:
                    pending = False
                    if re.match(r"\s*mod \w+ \{", line):
                        skip, depth = True, 0
                    else:
                        n += 1  # the attribute's own line
                if skip:
                    depth += line.count("{") - line.count("}")
                    if depth <= 0:
                        skip = False
                    continue
                n += 1
            if n > MAX_LINES:
                bad.append((path, n))
    return sorted(bad)


def main(argv):
    text = graph_text(argv)
    modules = {tuple(path_of(m)) for m in MODULE.findall(text) if path_of(m)}
    top_edges, sub_edges = set(), {}
    for line in text.splitlines():
        m = EDGE.match(line)
        if not m:
            continue
        a, b = path_of(m.group(1)), path_of(m.group(2))
        if not a or not b or (a[0],) not in modules or (b[0],) not in modules:
            continue  # the crate root, or outside the crate
        if a[0] != b[0]:
            top_edges.add((a[0], b[0]))
            continue
        # Inside one top-level module: the child modules that hold the two ends. An item of the
        # parent itself belongs to no child: a module and its parent may point at each other.
        x = a[1] if len(a) > 1 and tuple(a[:2]) in modules else None
        y = b[1] if len(b) > 1 and tuple(b[:2]) in modules else None
        if x and y and x != y:
            sub_edges.setdefault(a[0], set()).add((x, y))

    failed = False
    tops = {x for e in top_edges for x in e}
    print("Top-level modules, each with the modules it uses:")
    for t in sorted(tops):
        used = sorted(b for a, b in top_edges if a == t)
        print(f"  {t:<10} -> {', '.join(used) if used else '(nothing)'}")
    for c in cycles(tops, top_edges):
        failed = True
        print(f"CYCLE between top-level modules: {' <-> '.join(c)}")
        for a, b in sorted(top_edges):
            if a in c and b in c:
                print(f"    {a} -> {b}")
    for parent, edges in sorted(sub_edges.items()):
        kids = {x for e in edges for x in e}
        for c in cycles(kids, edges):
            failed = True
            print(f"CYCLE inside {parent}: {' <-> '.join(c)}")
            for a, b in sorted(edges):
                if a in c and b in c:
                    print(f"    {parent}::{a} -> {parent}::{b}")
    for path, n in long_files():
        failed = True
        print(f"TOO LONG: {path} has {n} lines outside its tests (at most {MAX_LINES})")
    if failed:
        return 1
    print(f"No cycles; every source file at most {MAX_LINES} lines outside its tests.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
