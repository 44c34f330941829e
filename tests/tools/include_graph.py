#!/usr/bin/env python3
"""Checks the include graph of proxy/: no module includes itself through
others (a cycle), and the layers point one way (STYLE.md: main -> server ->
listeners -> sessions -> bridge -> codec/pool/headers -> leaves).

A module is a .c file and its .h. Prints the cycles and the edges that go
against the layers, and exits 1 if there are any.

  tests/tools/include_graph.py [SRC]
"""

import collections
import os
import re
import sys

# Lower numbers may not include higher ones (a leaf includes no session).
LAYER = {"core": 0, "tls": 1, "upstream": 2, "http": 3, "quic": 4, "tcp": 4}
# core's top (main, server, admin) builds everything: it sits above all.
TOP = {"main", "server", "admin"}
# Leaves any layer may use (STYLE.md: the INI reader, buffers, header
# rules, codec): they themselves include only core modules.
LEAVES = {"http_headers"}

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")
root = os.path.join(src, "proxy")
where = {}
edges = collections.defaultdict(set)
for layer in os.listdir(root):
    for name in os.listdir(os.path.join(root, layer)):
        if name.endswith((".c", ".h")):
            where[name[:-2]] = layer
for layer in os.listdir(root):
    for name in os.listdir(os.path.join(root, layer)):
        if not name.endswith((".c", ".h")):
            continue
        mod = name[:-2]
        with open(os.path.join(root, layer, name)) as f:
            for inc in re.findall(r'^#include "([a-z0-9_]+)\.h"', f.read(), re.M):
                if inc != mod and inc in where:
                    edges[mod].add(inc)

# Cycles: strongly connected components of more than one module.
index, low, stack, on, comps = {}, {}, [], set(), []
counter = [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
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
            comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(where):
    if v not in index:
        visit(v)

bad = []
for a in sorted(edges):
    for b in sorted(edges[a]):
        if a in TOP:
            continue
        la, lb = LAYER[where[a]], LAYER[where[b]]
        if a in LEAVES:
            lb = lb if where[b] == "core" and b not in TOP else 99
            la = 0
        elif b in LEAVES:
            continue
        if b in TOP or lb > la:
            bad.append("%s (%s) includes %s (%s)" % (a, where[a], b, where[b]))

for c in comps:
    print("include cycle: " + " <-> ".join(c))
for e in bad:
    print("against the layers: " + e)
print("%d modules, %d include edges, %d cycles, %d edges against the layers"
      % (len(where), sum(len(v) for v in edges.values()), len(comps), len(bad)))
sys.exit(1 if comps or bad else 0)
