#!/usr/bin/env bash
# #[pg_test]s on Postgres $PG (default 15): cargo-pgrx starts its own cluster
# as the postgres OS user (initdb refuses root). Its data directory lives in
# a runtime folder that user owns, outside the checkout (see
# tests/lib/cluster.sh), so a checkout in a private directory works too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TG_ROOT=$ROOT; . tests/lib/pg.sh
DIR=$(tests/lib/cluster.sh runtime "pgrx-test-$PG")
# cargo pgrx test writes the library in place; a server that has the old one
# mapped would crash. Unlink it first: a running server keeps the old file.
so="$("$PG_CONFIG" --pkglibdir)/pg_tenantguard.so"
if [ -e "$so" ]; then mv -f "$so" "$so.tg-old.$$" && rm -f "$so.tg-old.$$"; fi
if ! cargo pgrx test "pg$PG" --runas postgres --pgdata "$DIR/data"; then
  echo "run_pgrx.sh: cargo pgrx test pg$PG failed; the test cluster's files are in $DIR" >&2
  for f in "$DIR"/data/log/* "$DIR"/*.log; do
    [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
fi
