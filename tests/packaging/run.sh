#!/usr/bin/env bash
# Packages on a live server (Postgres 15, the system one): `dpkg -i` of the
# package while a cluster with the library preloaded serves a session, the
# README's quick start from the installed package, an upgrade to a rebuilt
# package, `dpkg -r`; and `make install` (packaging/install.sh) on the same
# live cluster. Every replacement must be a new file renamed into place:
# the live backends keep mapping the old one (shown as "(deleted)" in their
# /proc/PID/maps), none dies, and the postmaster never restarts.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/e2e/lib.sh
[ "$PG" = 15 ] || { echo "packaging test: runs on the system Postgres 15 only"; echo "0 passed, 0 failed"; exit 0; }
PORT=${TG_PKG_PORT:-55490}
LIBSO=$("$PG_CONFIG" --pkglibdir)/pg_tenantguard.so
DEB=$(PG=15 bash packaging/deb.sh 2>/dev/null) || { echo "packaging/deb.sh failed"; exit 1; }
tests/lib/cluster.sh start pkg "$PORT" preload >/dev/null || exit 1
DIR=$(tests/lib/cluster.sh dir pkg); SOCK=$DIR/sock; LOG=$DIR/server.log
cleanup() { [ -n "${LIVE_PID:-}" ] && kill "$LIVE_PID" 2>/dev/null; tests/lib/cluster.sh stop pkg; }
trap cleanup EXIT
q postgres "CREATE EXTENSION pg_tenantguard; CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;" >/dev/null
ACME=$(q postgres "SELECT tenantguard.sign_context('{\"tid\":\"acme\",\"sub\":\"alice\",\"exp\":4000000000,\"iat\":1700000000}')")
START=$(q postgres "SELECT pg_postmaster_start_time()")
# A live application session that keeps using the library throughout.
coproc LIVE { psql -X -q -A -t -h "$SOCK" -p "$PORT" -U app -d postgres 2>&1; }
LIVE_PID=$LIVE_PID
live() { echo "$1" >&"${LIVE[1]}"; echo "SELECT '__END__';" >&"${LIVE[1]}"; local out="" line
  while IFS= read -r -t 10 line <&"${LIVE[0]}"; do [ "$line" = "__END__" ] && break; out="$out$line"; done; echo "$out"; }
LIVE_BACKEND=$(live "SELECT pg_backend_pid();")
LIVE_OUT=$(live "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; SELECT tenantguard.tenant_id(); COMMIT;"); echo "# live session said: $LIVE_OUT"
check "the live session works before" test "$LIVE_OUT" = "facme"
maps_deleted() { grep -q "pg_tenantguard.so (deleted)" "/proc/$1/maps"; }
survived() { local what=$1
  check "$what: the postmaster did not restart" test "$(q postgres "SELECT pg_postmaster_start_time()")" = "$START"
  check "$what: no backend died" bash -c "! grep -qE 'terminated by signal|was terminated|server process .* exited with exit code [^0]' '$LOG'"
  check "$what: the live session still works" test "$(live "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; SELECT tenantguard.tenant_id(); COMMIT;")" = "facme"
  check "$what: the live backend is the same process" test "$(live "SELECT pg_backend_pid();")" = "$LIVE_BACKEND"
}

# 1. dpkg -i under the live cluster
ino0=$(stat -c %i "$LIBSO" 2>/dev/null || echo none)
if dpkg -i "$DEB" >"$DIR/dpkg.log" 2>&1; then ok "dpkg -i $(basename "$DEB") on a live server"; else fail "dpkg -i failed: $(tail -3 "$DIR/dpkg.log")"; fi
check "dpkg -i: the library is a new file (inode changed)" test "$(stat -c %i "$LIBSO")" != "$ino0"
check "dpkg -i: the live backend still maps the old, now deleted, file" maps_deleted "$LIVE_BACKEND"
survived "dpkg -i"
check "dpkg -i: the package owns the library" bash -c "dpkg -S '$LIBSO' | grep -q postgresql-15-tenantguard"

# 2. The README's quick start, in a new database, from the installed package.
q postgres "CREATE DATABASE quick" >/dev/null
DB=quick q postgres "CREATE EXTENSION pg_tenantguard; CREATE TABLE invoices (id serial PRIMARY KEY, tenant_id text NOT NULL, customer text, amount numeric);
  SELECT count(*) FROM tenantguard.protect('invoices', dry_run => true); SELECT count(*) FROM tenantguard.protect('invoices');
  INSERT INTO invoices (tenant_id, customer, amount) VALUES ('globex', 'Wile E.', 99);
  GRANT SELECT, INSERT, UPDATE, DELETE ON invoices TO app; GRANT USAGE ON SEQUENCE invoices_id_seq TO app;" >/dev/null
out=$(DB=quick q app "BEGIN; SELECT tenantguard.set_context('$ACME');
  INSERT INTO invoices (customer, amount) VALUES ('Road Runner', 12);
  SELECT string_agg(tenant_id || ':' || customer, ','), count(*) FROM invoices; COMMIT;" | tail -1)
check "quick start: the app sees only its own row, tenant filled in" test "$out" = "acme:Road Runner|1"
out=$(DB=quick q_err app "SELECT * FROM invoices" 2>&1)
check "quick start: without a context, the table fails closed" has "$out" 'no tenant context'
W=$(DB=quick q postgres "SELECT jsonb_array_length(tenantguard.status()->'warnings')" 2>&1); echo "# status warnings: $W"
check "quick start: status() reports no version mismatch" test "$W" = "0"

# 3. Upgrade to a rebuilt package (a new revision), still live.
DEB2=$(PG=15 bash packaging/deb.sh --revision 1 2>/dev/null)
ino1=$(stat -c %i "$LIBSO")
if dpkg -i "$DEB2" >"$DIR/dpkg2.log" 2>&1; then ok "dpkg -i of a rebuilt package (upgrade)"; else fail "upgrade failed: $(tail -3 "$DIR/dpkg2.log")"; fi
check "upgrade: dpkg reports the new revision" bash -c "dpkg -s postgresql-15-tenantguard | grep -q '^Version: .*-1$'"
check "upgrade: the library is a new file again" test "$(stat -c %i "$LIBSO")" != "$ino1"
survived "upgrade"

# 4. make install (packaging/install.sh) under the live cluster: atomic too.
ino2=$(stat -c %i "$LIBSO")
if PG=15 bash packaging/install.sh >"$DIR/install.log" 2>&1; then ok "make install's installer on a live server"; else fail "install.sh failed: $(tail -3 "$DIR/install.log")"; fi
check "make install: the library is a new file (renamed into place, not rewritten)" test "$(stat -c %i "$LIBSO")" != "$ino2"
survived "make install"

# 5. dpkg -r: the files go; the running server keeps serving what it loaded.
if dpkg -r postgresql-15-tenantguard >"$DIR/dpkg3.log" 2>&1; then ok "dpkg -r"; else fail "dpkg -r failed: $(tail -3 "$DIR/dpkg3.log")"; fi
check "dpkg -r: the library and control file are gone" bash -c "[ ! -e '$LIBSO' ] && [ ! -e '$("$PG_CONFIG" --sharedir)/extension/pg_tenantguard.control' ]"
survived "dpkg -r"
q postgres "CREATE DATABASE after_rm" >/dev/null
out=$(DB=after_rm q_err postgres "CREATE EXTENSION pg_tenantguard" 2>&1)
check "dpkg -r: CREATE EXTENSION now fails cleanly" has "$out" 'is not available'
# Put the build back for the layers that follow.
PG=15 bash packaging/install.sh >/dev/null 2>&1 || fail "reinstalling after dpkg -r"
summary
