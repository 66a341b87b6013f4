#!/usr/bin/env bash
# #[pg_test]s: cargo-pgrx starts its own cluster as the postgres OS user
# (initdb refuses root). Its data directory lives in a runtime folder that
# user owns, outside the checkout (see tests/lib/cluster.sh), so a checkout
# in a private directory works too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PG=${PG:-15}
DIR=$(tests/lib/cluster.sh runtime "pgrx-test-$PG")
if ! cargo pgrx test "pg$PG" --runas postgres --pgdata "$DIR/data"; then
  echo "run_pgrx.sh: cargo pgrx test pg$PG failed; the test cluster's files are in $DIR" >&2
  for f in "$DIR"/data/log/* "$DIR"/*.log; do
    [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
fi
