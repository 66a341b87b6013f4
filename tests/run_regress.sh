#!/usr/bin/env bash
# pg_regress golden files (tests/regress) and isolation specs
# (tests/isolation) against a throwaway cluster.
#   tests/run_regress.sh [--accept]   --accept copies results over expected
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PGXS=$(/usr/lib/postgresql/15/bin/pg_config --pgxs | xargs dirname | xargs dirname)
PORT=${TG_REGRESS_PORT:-55440}
tests/lib/cluster.sh start regress "$PORT"
trap 'tests/lib/cluster.sh stop regress' EXIT
SOCK=$(tests/lib/cluster.sh dir regress)/sock
OUT=$ROOT/target/regress-out
rm -rf "$OUT"; mkdir -p "$OUT"; chmod 777 "$OUT"
status=0
TESTS=$(ls tests/regress/sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | sort)
"$PGXS/test/regress/pg_regress" --host="$SOCK" --port="$PORT" --user=postgres \
  --dbname=tg_regress --inputdir=tests/regress --outputdir="$OUT" \
  --bindir=/usr/lib/postgresql/15/bin $TESTS || status=$?
if [ -d tests/isolation/specs ]; then
  ISO=$(ls tests/isolation/specs/*.spec | xargs -n1 basename | sed 's/\.spec$//' | sort)
  "$PGXS/test/isolation/pg_isolation_regress" --host="$SOCK" --port="$PORT" --user=postgres \
    --dbname=tg_isolation --inputdir=tests/isolation --outputdir="$OUT/isolation" \
    --bindir=/usr/lib/postgresql/15/bin $ISO || status=$?
fi
if [ "${1:-}" = "--accept" ]; then
  cp "$OUT"/results/*.out tests/regress/expected/ 2>/dev/null || true
  [ -d "$OUT/isolation/results" ] && cp "$OUT"/isolation/results/*.out tests/isolation/expected/ || true
fi
if [ $status -ne 0 ]; then
  echo "--- regression diffs (target/regress-out) ---"
  cat "$OUT"/regression.diffs "$OUT"/isolation/regression.diffs 2>/dev/null | head -200
fi
exit $status
