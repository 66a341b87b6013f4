# Helpers for external-client tests: real servers, real connections.
# Sourced by tests/e2e/*.sh. Prints TAP-like lines and a summary.
E2E_PASSED=0; E2E_FAILED=0
TG_ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}; . "$TG_ROOT/tests/lib/pg.sh"
BIN=$PG_BINDIR
# The server's own client programs (psql, pg_dump) come first.
export PATH="$BIN:$PATH"
ok()   { E2E_PASSED=$((E2E_PASSED+1)); echo "ok - $*"; }
fail() { E2E_FAILED=$((E2E_FAILED+1)); echo "not ok - $*"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
# q ROLE SQL...: run as ROLE over the Unix socket, print unaligned rows.
q() { local role=$1; shift; psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U "$role" -d "${DB:-postgres}" -c "$*"; }
# q_err ROLE SQL: succeeds only if the SQL fails; prints the error.
q_err() { local role=$1; shift; if out=$(q "$role" "$@" 2>&1); then echo "unexpected success: $out"; return 1; else echo "$out"; fi; }
# has TEXT PATTERN: TEXT contains PATTERN (grep -q; safe with any quotes in TEXT).
has() { printf '%s\n' "$1" | grep -q -- "$2"; }
summary() { echo "$E2E_PASSED passed, $E2E_FAILED failed"; [ "$E2E_FAILED" -eq 0 ]; }
