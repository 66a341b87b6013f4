#!/usr/bin/env bash
# ALTER EXTENSION ... UPDATE from 0.1.0, the first release, to this tree's
# version, on Postgres 15: 0.1.0 is built from its commit in this
# repository's history, a database is filled with state (tenants, protected
# tables, audit chains in both modes, a revocation, roles and conditions,
# ciphertexts, a support window, a guarded schema), this tree's library is
# installed, the server restarted and the extension updated. Then every
# guarantee is checked again as the application role; the updated schema
# must equal a fresh install's; a downgrade is refused.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/e2e/lib.sh
. tests/upgrade/state.sh
[ "$PG" = 15 ] || { echo "upgrade test: 0.1.0 was released for Postgres 15 only"; echo "0 passed, 0 failed"; exit 0; }
V010=${TG_V010_COMMIT:-79792bb}   # the head of 0.1.0
WORK=$ROOT/target/upgrade
SRC=$WORK/src-0.1.0; PKG=$WORK/pkg-0.1.0
if [ ! -f "$PKG/.built-$V010" ]; then
  rm -rf "$SRC" "$PKG"; mkdir -p "$SRC"
  git archive "$V010" | tar -x -C "$SRC" || { echo "cannot extract 0.1.0 ($V010) from git history"; exit 1; }
  echo "# building 0.1.0 from $V010 (debug build; shared target/)"
  (cd "$SRC" && CARGO_TARGET_DIR=$ROOT/target cargo pgrx package --debug --pg-config "$PG_CONFIG" --out-dir "$PKG" >"$WORK/build-0.1.0.log" 2>&1) \
    || { echo "building 0.1.0 failed: $(tail -5 "$WORK/build-0.1.0.log")"; exit 1; }
  touch "$PKG/.built-$V010"
fi
PORT=${TG_UPGRADE_PORT:-55495}
restore() { tests/lib/cluster.sh stop upgrade; PG=15 bash packaging/install.sh >/dev/null 2>&1; }
trap restore EXIT
PG=15 bash packaging/install.sh --from "$PKG" >/dev/null
rm -f "$("$PG_CONFIG" --sharedir)/extension/pg_tenantguard--0.2.0.sql" "$("$PG_CONFIG" --sharedir)/extension/pg_tenantguard--0.1.0--0.2.0.sql"
CLUSTER_EXTRA_CONF="tenantguard.alert_notify = off" tests/lib/cluster.sh start upgrade "$PORT" preload >/dev/null || exit 1
DIR=$(tests/lib/cluster.sh dir upgrade); SOCK=$DIR/sock; LOG=$DIR/server.log
check "0.1.0: CREATE EXTENSION gives 0.1.0" test "$(q postgres "CREATE EXTENSION pg_tenantguard; SELECT extversion FROM pg_extension WHERE extname = 'pg_tenantguard'")" = "0.1.0"
populate_state
check_state "0.1.0"
# This tree's library and scripts, installed atomically under the live server.
PG=15 bash packaging/install.sh >/dev/null || { fail "installing this tree's build"; summary; exit 1; }
tests/lib/cluster.sh restart upgrade || exit 1
NEW=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=$(q postgres "SELECT tenantguard.status()->>'warnings'")
check "before UPDATE: status() warns that the library and the SQL differ" has "$out" "0.2.0 but the extension's SQL is 0.1.0: run ALTER EXTENSION pg_tenantguard UPDATE"
check "before UPDATE: the old SQL still runs on the new library" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME'); SELECT count(*) FROM orders; COMMIT;" | tail -1)" = "3"
q postgres "ALTER EXTENSION pg_tenantguard UPDATE" >/dev/null && ok "ALTER EXTENSION pg_tenantguard UPDATE" || fail "ALTER EXTENSION pg_tenantguard UPDATE"
check "after UPDATE: the extension is $NEW" test "$(q postgres "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenantguard'")" = "$NEW"
check "after UPDATE: status() has no warning" test "$(q postgres "SELECT jsonb_array_length(tenantguard.status()->'warnings')")" = "0"
check_state "after UPDATE"
# What 0.2.0 changed, on the updated database.
out=$(q_err postgres "UPDATE tenantguard.audit_log SET actor = 'x'" 2>&1)
check "after UPDATE: the append-only error names audit_log, not a partition" has "$out" 'UPDATE on tenantguard.audit_log is not allowed'
out=$(q_err gowner "ALTER POLICY tenantguard_select ON g.notes USING (true)" 2>&1)
check "after UPDATE: the recreated guard refuses the owner's ALTER POLICY" has "$out" 'altering policy tenantguard_select'
# The updated schema equals a fresh install's.
SHAPE="SELECT 'fn ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') ' || p.provolatile::text || p.proparallel::text
        || p.proisstrict::text || p.prosecdef::text || ' ' || coalesce(array_to_string(p.proconfig, ','), '') || ' '
        || md5(coalesce(p.prosrc, '')) || ' ' || coalesce(p.proacl::text, '')
   FROM pg_proc p WHERE p.pronamespace = 'tenantguard'::regnamespace
 UNION ALL
 SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
        || (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull, ',' ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
   FROM pg_class c WHERE c.relnamespace = 'tenantguard'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
    AND c.relname !~ '^audit_log_[0-9]'
 UNION ALL
 SELECT 'trigger ' || t.tgrelid::regclass || ' ' || t.tgname || ' ' || t.tgenabled::text FROM pg_trigger t
   JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'tenantguard'::regnamespace AND NOT t.tgisinternal
    AND c.relname !~ '^audit_log_[0-9]'
 UNION ALL
 SELECT 'policy ' || pol.polrelid::regclass || ' ' || pol.polname || ' ' || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
   FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid WHERE c.relnamespace = 'tenantguard'::regnamespace
 ORDER BY 1"
q postgres "$SHAPE" >"$DIR/shape-updated.txt"
q postgres "CREATE DATABASE fresh" >/dev/null
DB=fresh q postgres "CREATE EXTENSION pg_tenantguard" >/dev/null
DB=fresh q postgres "$SHAPE" >"$DIR/shape-fresh.txt"
if [ "$(wc -l <"$DIR/shape-fresh.txt")" -gt 50 ] && diff "$DIR/shape-fresh.txt" "$DIR/shape-updated.txt" >"$DIR/shape.diff"; then
  ok "after UPDATE: functions, tables, triggers and policies equal a fresh $NEW install ($(wc -l <"$DIR/shape-fresh.txt") objects)"
else
  fail "after UPDATE: the schema differs from a fresh install: $(head -10 "$DIR/shape.diff")"
fi
out=$(q_err postgres "ALTER EXTENSION pg_tenantguard UPDATE TO '0.1.0'" 2>&1)
check "a downgrade is refused with a clear error" has "$out" "no update path from version \"$NEW\" to version \"0.1.0\""
summary
