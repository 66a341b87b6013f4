#!/usr/bin/env bash
# A major upgrade with pg_upgrade, Postgres 15 -> 18: the path a team takes
# off 15 before its end of life (docs/operations.md). A 15 cluster with the
# extension and state (tests/upgrade/state.sh: protected tables,
# ciphertexts, audit chains in both modes, revocations, roles, a support
# window, a guarded schema) is upgraded with 18's pg_upgrade; then every
# guarantee is checked as the application role on 18.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OLD_PG=${TG_UPGRADE_FROM:-15}; NEW_PG=${TG_UPGRADE_TO:-18}
PG=$OLD_PG . tests/e2e/lib.sh
. tests/upgrade/state.sh
OLD_BIN=$(PG=$OLD_PG bash -c '. tests/lib/pg.sh && echo $PG_BINDIR')
NEW_BIN=$(PG=$NEW_PG bash -c '. tests/lib/pg.sh && echo $PG_BINDIR')
NEW_LIB=$(PG=$NEW_PG bash -c '. tests/lib/pg.sh && $PG_CONFIG --pkglibdir')
[ -e "$NEW_LIB/pg_tenantguard.so" ] || { echo "pg_upgrade test: the extension is not installed for $NEW_PG (PG=$NEW_PG make install)"; exit 1; }
PORT=${TG_PGUPGRADE_PORT:-55496}
PG=$OLD_PG tests/lib/cluster.sh start pgu-old "$PORT" preload >/dev/null || exit 1
OLD=$(tests/lib/cluster.sh dir pgu-old); SOCK=$OLD/sock; LOG=$OLD/server.log
trap 'PG=$OLD_PG tests/lib/cluster.sh stop pgu-old; PG=$NEW_PG tests/lib/cluster.sh stop pgu-new' EXIT
populate_state
check_state "on $OLD_PG, before"
q ops "SELECT jsonb_agg(d) FROM tenantguard.audit_digest() d" >"$OLD/digest.json"
# Debian's postgresql-15 (15.18) records a `pg_attver` option on every
# column it creates (and puts it back on every ALTER), which no other build
# knows: 18's restore refuses it ("unrecognized parameter"), with or without
# this extension. Remove it from the catalog first (docs/operations.md).
if [ "$(q postgres "SELECT count(*) FROM pg_attribute WHERE attoptions::text LIKE '%pg_attver%' AND attrelid >= 16384")" != 0 ]; then
  q postgres "UPDATE pg_attribute SET attoptions = NULLIF(array(SELECT o FROM unnest(attoptions) o WHERE o NOT LIKE 'pg_attver=%'), '{}')
               WHERE attrelid >= 16384 AND attoptions::text LIKE '%pg_attver%'" >/dev/null
  check "Debian 15's pg_attver column options removed before the upgrade" test "$(q postgres "SELECT count(*) FROM pg_attribute WHERE attoptions::text LIKE '%pg_attver%' AND attrelid >= 16384")" = "0"
fi
PG=$OLD_PG tests/lib/cluster.sh stop pgu-old
# The new cluster: initdb as pg_upgrade wants it (the old one has no data
# checksums; 18's initdb turns them on by default), the same settings.
NEW=$(PG=$NEW_PG tests/lib/cluster.sh runtime pgu-new)
sudo -u postgres "$NEW_BIN/initdb" -D "$NEW/data" -U postgres --auth=trust -E UTF8 --locale=C --no-data-checksums >"$NEW/initdb.log" 2>&1 \
  || { echo "initdb $NEW_PG failed: $(tail -3 "$NEW/initdb.log")"; exit 1; }
grep -E "^(tenantguard\.|shared_preload_libraries|listen_addresses|max_connections|fsync|log_)" "$OLD/data/postgresql.conf" >>"$NEW/data/postgresql.conf"
{ echo "port = $PORT"; echo "unix_socket_directories = '$NEW/sock'"; } >>"$NEW/data/postgresql.conf"
if (cd "$NEW" && sudo -u postgres "$NEW_BIN/pg_upgrade" -b "$OLD_BIN" -B "$NEW_BIN" -d "$OLD/data" -D "$NEW/data" \
      -p $((PORT + 1)) -P $((PORT + 2)) -U postgres >"$NEW/pg_upgrade.log" 2>&1); then
  ok "pg_upgrade $OLD_PG -> $NEW_PG"
else
  fail "pg_upgrade $OLD_PG -> $NEW_PG: $(grep -iE 'fatal|error|failure|could not' "$NEW/pg_upgrade.log" | head -5)"
  summary; exit 1
fi
sudo -u postgres "$NEW_BIN/pg_ctl" -D "$NEW/data" -l "$NEW/server.log" -w -t 60 start >/dev/null \
  || { PG=$NEW_PG tests/lib/cluster.sh why pgu-new; exit 1; }
SOCK=$NEW/sock; LOG=$NEW/server.log; BIN=$NEW_BIN; export PATH="$NEW_BIN:$PATH"
check "the server is $NEW_PG now" test "$(q postgres "SELECT current_setting('server_version_num')::int / 10000")" = "$NEW_PG"
check "the extension came along at its version" test "$(q postgres "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenantguard'")" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
check_state "on $NEW_PG, after pg_upgrade"
out=$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit_against('$(cat "$OLD/digest.json")'::jsonb)")
check "the chains still verify against the digest taken on $OLD_PG" test "$out" = "t"
summary
