#!/usr/bin/env bash
# #[pg_test]s: cargo-pgrx starts its own cluster as the postgres OS user
# (initdb refuses root). Its data directory's parent must belong to postgres.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p target/pgrx-test
chown postgres:postgres target/pgrx-test
rm -rf target/pgrx-test/data
cargo pgrx test pg15 --runas postgres --pgdata "$ROOT/target/pgrx-test/data"
