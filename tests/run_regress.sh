#!/usr/bin/env bash
# pg_regress golden files (tests/regress) and isolation specs
# (tests/isolation) against a throwaway cluster of Postgres $PG (default 15).
#   tests/run_regress.sh [--accept]   --accept copies results over expected
# Where a version prints the same thing differently (a GUC's name, EXPLAIN's
# format, an error's wording), an alternative expected file (name_1.out)
# holds it. Never one that refuses less: see tests/README.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TG_ROOT=$ROOT; . tests/lib/pg.sh
PORT=${TG_REGRESS_PORT:-55440}
NAME=regress-$PG
tests/lib/cluster.sh start "$NAME" "$PORT"
trap 'tests/lib/cluster.sh stop "$NAME"' EXIT
SOCK=$(tests/lib/cluster.sh dir "$NAME")/sock
OUT=$ROOT/target/regress-out/$PG
rm -rf "$OUT"; mkdir -p "$OUT"; chmod 777 "$OUT"
status=0
# An alternative expected file may never refuse less than name.out.
python3 tests/regress/check_alternatives.py || status=1
TESTS=$(ls tests/regress/sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | sort)
"$PG_PGXS/test/regress/pg_regress" --host="$SOCK" --port="$PORT" --user=postgres \
  --dbname=tg_regress --inputdir=tests/regress --outputdir="$OUT" \
  --bindir="$PG_BINDIR" $TESTS || status=$?
if [ -d tests/isolation/specs ]; then
  ISO=$(ls tests/isolation/specs/*.spec | xargs -n1 basename | sed 's/\.spec$//' | sort)
  "$PG_PGXS/test/isolation/pg_isolation_regress" --host="$SOCK" --port="$PORT" --user=postgres \
    --dbname=tg_isolation --inputdir=tests/isolation --outputdir="$OUT/isolation" \
    --bindir="$PG_BINDIR" $ISO || status=$?
fi
if [ "${1:-}" = "--accept" ]; then
  cp "$OUT"/results/*.out tests/regress/expected/ 2>/dev/null || true
  [ -d "$OUT/isolation/results" ] && cp "$OUT"/isolation/results/*.out tests/isolation/expected/ || true
fi
if [ $status -ne 0 ]; then
  echo "--- regression diffs (target/regress-out/$PG) ---"
  cat "$OUT"/regression.diffs "$OUT"/isolation/regression.diffs 2>/dev/null | head -200
fi
exit $status
