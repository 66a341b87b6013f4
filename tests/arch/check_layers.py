#!/usr/bin/env python3
"""The module graph of src/: no import cycles, no file over the size limit.

Every `crate::a::b`, `super::x` and `use` path in a file is resolved to the
module it names (a file: src/audit/chain.rs is `audit::chain`, a mod.rs is
its folder). An edge A -> B means A's file names something in B. A module
declaring its children (`mod x;`) is not an edge; a parent that names a
child's items is. Cycles are reported as strongly connected components.

    python3 tests/arch/check_layers.py          check, print the layers
    python3 tests/arch/check_layers.py --dot    the graph, for graphviz
Exit 1 on a cycle, or on a file over MAX_LINES.
"""
import os, re, sys

MAX_LINES = 1000
# Foundations import no capability (docs/architecture.md).
FOUNDATIONS = {'compat', 'error', 'spi', 'gucs', 'keys', 'issuers', 'alerts', 'access', 'context',
               'context::accessors', 'context::bypass_state', 'context::guc'}
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'src')

def modules():
    mods = {}
    for dp, _, fs in os.walk(ROOT):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(dp, f), ROOT)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib'):
                rel = rel[:-1]
            if rel == ['pg_tests']:          # included into lib.rs's test module
                continue
            mods['::'.join(rel)] = os.path.join(dp, f)
    return mods

def strip(src):
    src = re.sub(r'//[^\n]*', '', src)                      # comments, doc comments
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)          # string literals
    return src

def resolve(path, here, mods):
    """Longest module prefix of `path` (a list of segments), from `here`."""
    if path[0] == 'crate':
        base, rest = [], path[1:]
    elif path[0] == 'super':
        base = here.split('::')[:-1] if here else []
        rest = path[1:]
        while rest and rest[0] == 'super':
            base, rest = base[:-1], rest[1:]
    elif path[0] == 'self':
        base, rest = here.split('::') if here else [], path[1:]
    else:
        return None
    best = None
    for i in range(len(rest) + 1):
        cand = '::'.join(base + rest[:i])
        if cand in mods and cand != '':   # the crate root is nobody's import
            best = cand
    return best

def edges(mods):
    g = {m: set() for m in mods}
    for m, f in mods.items():
        src = strip(open(f).read())
        paths = []
        # use trees: use crate::{a, b::{c, d}}; flatten one level of braces
        for u in re.finditer(r'\buse\s+((?:crate|super|self)(?:::\w+)*)(?:::\{([^;]*)\})?', src):
            head = u.group(1).split('::')
            if u.group(2):
                for part in re.split(r'[,{}]', u.group(2)):
                    part = part.strip().split(' as ')[0].strip()
                    if part and part != '*':
                        seg = part.split('::')
                        paths.append(head + (seg if seg[0] != 'self' else []))
                paths.append(head)
            else:
                paths.append(head)
        for p in re.finditer(r'\b((?:crate|super)(?:::\w+)+)', src):
            paths.append(p.group(1).split('::'))
        # bare paths to the module's own children (`mod x;` then `x::f()`)
        for c in re.findall(r'\bmod\s+(\w+)\s*;', src):
            child = f'{m}::{c}' if m else c
            if child in mods and re.search(r'(?<![\w:])' + c + r'::', src):
                paths.append(['crate'] + child.split('::'))
        here = m
        for p in paths:
            t = resolve(p, here, mods)
            if t is not None and t != m:
                # a module naming its own descendant through `self::` or
                # `crate::` is fine (parent -> child); child -> parent is not
                g[m].add(t)
    return g

def sccs(g):
    index, low, st, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            out.append(comp)
    for v in g:
        if v not in index:
            visit(v)
    return out

def main():
    mods = modules()
    g = edges(mods)
    if '--dot' in sys.argv:
        print('digraph src {')
        for a in sorted(g):
            for b in sorted(g[a]):
                print(f'  "{a or "lib"}" -> "{b or "lib"}";')
        print('}')
        return 0
    bad = 0
    for comp in sccs(g):
        if len(comp) > 1:
            bad += 1
            print('cycle:', ' <-> '.join(sorted(c or 'lib' for c in comp)))
    for f in sorted(FOUNDATIONS):
        for t in sorted(g.get(f, ())):
            if t not in FOUNDATIONS:
                bad += 1
                print(f'foundation {f} imports {t}, which is not a foundation')
    # layers: longest path to a sink
    depth = {}
    def d(v, seen=()):
        if v in depth:
            return depth[v]
        if v in seen:
            return 0
        depth[v] = 1 + max((d(w, seen + (v,)) for w in g[v]), default=-1)
        return depth[v]
    for v in g:
        d(v)
    by = {}
    for v, k in depth.items():
        by.setdefault(k, []).append(v or 'lib')
    for k in sorted(by):
        print(f'layer {k}: ' + ', '.join(sorted(by[k])))
    for m, f in sorted(mods.items()):
        n = sum(1 for _ in open(f))
        if n > MAX_LINES:
            bad += 1
            print(f'too long: {os.path.relpath(f, os.path.dirname(ROOT))} has {n} lines (limit {MAX_LINES})')
    print(f'{len(mods)} modules, {sum(len(v) for v in g.values())} imports, ' +
          ('no cycles' if not any(len(c) > 1 for c in sccs(g)) else 'CYCLES'))
    return 1 if bad else 0

if __name__ == '__main__':
    sys.exit(main())
