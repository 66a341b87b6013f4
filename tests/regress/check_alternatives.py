#!/usr/bin/env python3
"""An alternative expected file (name_N.out) may differ from name.out in
wording or plan format only, never in what is refused: both must hold the
same statements, and the same statements must fail. Run by
tests/run_regress.sh; exit 1 on a violation."""
import glob, os, re, sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'expected')

def statements(path):
    """(statement echoed, failed?) in order. pg_regress echoes each input
    line; an ERROR line after it marks it failed."""
    out, cur = [], None
    for line in open(path, encoding='utf-8', errors='replace'):
        line = line.rstrip('\n')
        if line.startswith(('ERROR:', 'psql:')) and 'ERROR' in line:
            if out:
                out[-1] = (out[-1][0], True)
            continue
        # echoed input: not result rows (start with space), separators,
        # row counts, plan lines, notices and details
        if not line or line[0] in ' -(' or re.match(r'^(NOTICE|DETAIL|HINT|WARNING|CONTEXT|LINE \d+|\s*\^)', line):
            continue
        if re.match(r'^[A-Za-z\\]', line) and not re.match(r'^[a-z_]+\s*\|', line):
            out.append((line, False))
    return out

bad = 0
for alt in sorted(glob.glob(os.path.join(HERE, '*_[0-9].out'))):
    base = re.sub(r'_[0-9]\.out$', '.out', alt)
    a, b = statements(base), statements(alt)
    fa = [s for s, f in a if f]
    fb = [s for s, f in b if f]
    if fa != fb:
        bad += 1
        print(f'{os.path.basename(alt)}: refuses other statements than {os.path.basename(base)}:')
        for s in sorted(set(fa) ^ set(fb)):
            print(f'   {"only in base" if s in fa else "only in alt "}: {s}')
sys.exit(1 if bad else 0)
