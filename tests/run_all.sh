#!/usr/bin/env bash
# The whole suite. Prints one summary line per layer and a closing
# "N passed, N failed" line.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
passed=0; failed=0; failures=""
layer() {
  local name=$1; shift
  echo "=== $name ==="
  local t0=$SECONDS
  if "$@"; then passed=$((passed+1)); echo "=== $name: ok ($((SECONDS - t0)) s)"; else failed=$((failed+1)); failures="$failures $name"; echo "=== $name: FAILED ($((SECONDS - t0)) s)"; fi
}
layer "architecture (src/ module graph: no cycles, foundations import no capability, files <= 1000 lines)" python3 tests/arch/check_layers.py
layer "unit (tenantguard-core, no Postgres)" cargo test -p tenantguard-core
# pg_test builds install a test variant of the extension; the release
# build is installed after it for every other layer.
layer "pg_test (internals)" bash tests/run_pgrx.sh
layer "install (release)" cargo pgrx install --release --pg-config "$PG_CONFIG"
layer "pg_regress + isolation (SQL surface, as the app role)" bash tests/run_regress.sh
layer "e2e (sessions, logs, hooks, keys, reference)" bash tests/e2e/run.sh
layer "checkout anywhere (make demo from a 0700 directory; failures say why)" bash tests/checkout/run.sh
layer "pooler soak (PgBouncer transaction mode, 32 clients x 8 tenants, 50k tx)" bash tests/soak/run_pooler.sh
layer "crash safety (immediate stop / kill -9 under audited writes, 4 seeds)" bash tests/soak/crash.sh
echo
echo "whole suite: $SECONDS s"
echo "layers:$passed passed, $failed failed${failures:+ (failed:$failures)}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
