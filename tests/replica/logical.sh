#!/usr/bin/env bash
# Logical replication, as a blue/green move does it (docs/operations.md,
# "Logical replication and blue/green upgrades"):
#
# 1. blue (a primary full of state, both audit modes) publishes FOR ALL
#    TABLES; green (a new server: roles, then `pg_dump -s`) subscribes while
#    the application keeps writing to blue. Blue's writer keeps working, green
#    applies the trail without re-auditing, and refuses local audited writes.
# 2. Cutover: writes stop, green catches up, its subscription is disabled,
#    complete_cutover() moves the sequences. On green the app role then sees
#    exactly its rows, decrypts, is refused with a revoked token, and every
#    chain verifies on both sides, also after green continues them.
# 3. A publication of some tables only (database `single` on green): applied
#    rows are recorded in green's own trail as `replicated from subscription
#    ...`; export_config()/import_config() carries keys and access rules.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/e2e/lib.sh
. tests/upgrade/state.sh
# TG_GREEN_PG=18 (with PG=15): green runs another major version, as a
# blue/green major-version upgrade does.
GPG=${TG_GREEN_PG:-$PG}
BPORT=${TG_LOGICAL_PORT:-55510}; GPORT=$((BPORT + 1))
CLUSTER_EXTRA_CONF=$'wal_level = logical\ntenantguard.standby_heartbeat = off' tests/lib/cluster.sh start "lr-blue-$PG" "$BPORT" preload >/dev/null || exit 1
CLUSTER_EXTRA_CONF=$'tenantguard.standby_heartbeat = off\n'"${TG_GREEN_CONF:-}" PG=$GPG tests/lib/cluster.sh start "lr-green-$GPG" "$GPORT" preload >/dev/null || exit 1
trap 'PG=$GPG tests/lib/cluster.sh stop "lr-green-$GPG"; tests/lib/cluster.sh stop "lr-blue-$PG"' EXIT
BDIR=$(tests/lib/cluster.sh dir "lr-blue-$PG"); GDIR=$(PG=$GPG tests/lib/cluster.sh dir "lr-green-$GPG")
echo "# blue: PostgreSQL $PG, green: PostgreSQL $GPG"
blue()  { SOCK=$BDIR/sock PORT=$BPORT "$@"; }
green() { SOCK=$GDIR/sock PORT=$GPORT "$@"; }
SOCK=$BDIR/sock; PORT=$BPORT
populate_state
ACME=$(tok '{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}')
CTX="SELECT tenantguard.set_context('$ACME') IS NULL;"
INITECH_CTX="SELECT tenantguard.set_context('$(tok '{"tid":"initech","sub":"ian","exp":4000000000,"iat":1700000000}')') IS NULL;"

# --- 1. blue publishes everything ---------------------------------------------
blue q postgres "CREATE PUBLICATION bg FOR ALL TABLES WITH (publish_via_partition_root = true)" >/dev/null
blue q postgres "ALTER SYSTEM SET tenantguard.audit_background = on" >/dev/null
blue q postgres "SELECT pg_reload_conf()" >/dev/null
blue q app "BEGIN; $CTX UPDATE orders SET amount = amount + 1 WHERE id = 2; COMMIT;" >/dev/null
sleep 0.5
check "blue: with the publication, the writer still chains (the inbox has a replica identity)" \
  test "$(blue q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = "0"
check "blue: audit_flush() works with the publication" test "$(blue q postgres "SELECT tenantguard.audit_flush() >= 0")" = "t"
check "blue: verify_audit() works with the publication" test "$(blue q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"

# green: the roles, then the schema (as pg_dump -s has it), then subscribe.
blue bash -c 'pg_dumpall -h "$SOCK" -p "$PORT" -U postgres --roles-only' >"$GDIR/roles.sql" 2>/dev/null
green bash -c 'psql -X -q -h "$SOCK" -p "$PORT" -U postgres -d postgres -f "$0"' "$GDIR/roles.sql" >/dev/null 2>&1
blue bash -c 'pg_dump -h "$SOCK" -p "$PORT" -U postgres -s postgres' >"$GDIR/schema.sql" 2>/dev/null
green bash -c 'psql -X -q -h "$SOCK" -p "$PORT" -U postgres -d postgres -f "$0"' "$GDIR/schema.sql" >"$GDIR/restore.log" 2>&1
check "green: the schema restored (protected tables, guarded schema)" \
  test "$(green q postgres "SELECT count(*) FROM pg_policies WHERE tablename IN ('orders', 'secrets', 'notes')" )" -gt 0

# Writes continue on blue while green copies.
( for i in $(seq 1 30); do
    blue q app "BEGIN; $INITECH_CTX INSERT INTO orders VALUES (1000 + $i, 'initech', $i); COMMIT;" >/dev/null 2>&1 && echo "$i"
    sleep 0.05
  done >"$GDIR/acked" ) &
WRITER=$!
# 16+ apply as each table's owner unless run_as_owner: protected tables
# have FORCE ROW LEVEL SECURITY, and Postgres refuses to apply as an owner
# that RLS applies to ("cannot replicate into relation with row-level
# security enabled"). The subscription's owner (a superuser) applies instead.
SUBOPTS=""; [ "$GPG" -ge 16 ] && SUBOPTS=" WITH (run_as_owner = true)"
green q postgres "CREATE SUBSCRIPTION bg CONNECTION 'host=$BDIR/sock port=$BPORT dbname=postgres user=postgres' PUBLICATION bg$SUBOPTS" >/dev/null 2>&1 \
  || fail "green: CREATE SUBSCRIPTION"
t0=$SECONDS
for i in $(seq 1 ${TG_SYNC_WAIT:-1200}); do
  [ "$(green q postgres "SELECT count(*) FILTER (WHERE srsubstate NOT IN ('r', 's')) = 0 AND count(*) > 0 FROM pg_subscription_rel")" = t ] && break; sleep 0.1
done
echo "# initial copy: $((SECONDS - t0)) s for $(green q postgres "SELECT count(*) FROM pg_subscription_rel") tables"
green q postgres "SELECT srrelid::regclass::text || ':' || srsubstate::text FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')" | sed 's/^/# not ready: /'
check "green: every table of the publication is synchronized" \
  test "$(green q postgres "SELECT count(*) FILTER (WHERE srsubstate NOT IN ('r', 's')) FROM pg_subscription_rel")" = "0"
check "green: tenantguard.trail_subscriptions() names the subscription" test "$(green q ops "SELECT string_agg(s, ',') FROM tenantguard.trail_subscriptions() s")" = "bg"
check "green: status() says where the trail comes from" test "$(green q ops "SELECT tenantguard.status()->>'trail_replicated_from'")" = '["bg"]'
out=$(green q_err app "BEGIN; $CTX INSERT INTO orders VALUES (9999, 'acme', 1); COMMIT;" 2>&1)
check "green, before cutover: a local audited write is refused (the publisher writes the trail)" has "$out" "audited writes go to the publisher until cutover"
out=$(green q_err ops "SELECT tenantguard.revoke_user('acme', 'zed')" 2>&1)
check "green, before cutover: an access rule change is refused too (change it on the publisher)" has "$out" "change them on the publisher until cutover"
out=$(green q_err app "BEGIN; SELECT tenantguard.set_context('$(tok '{"tid":"newco","sub":"nina","exp":4000000000,"iat":1700000000}')') IS NULL; SELECT tenantguard.encrypt('x'); COMMIT;" 2>&1)
check "green, before cutover: a new tenant key is refused (its salt would clash with the publisher's)" has "$out" "change them on the publisher until cutover"
check "green, before cutover: reads work for the app (exactly its rows)" \
  test "$(green q app "BEGIN; $CTX SELECT count(*) FILTER (WHERE tenant_id <> 'acme') FROM orders; COMMIT;" | tail -1)" = "0"
wait "$WRITER"
check "blue: the writes during the copy were acknowledged" test "$(wc -l <"$GDIR/acked")" = "30"

# --- 2. cutover ------------------------------------------------------------------
sleep 0.3
blue q postgres "SELECT tenantguard.audit_flush()" >/dev/null
lsn=$(blue q postgres "SELECT pg_current_wal_lsn()")
for i in $(seq 1 300); do
  [ "$(blue q postgres "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$lsn'), false) FROM pg_replication_slots WHERE slot_name = 'bg'")" = t ] && break; sleep 0.1
done
green q postgres "ALTER SUBSCRIPTION bg DISABLE" >/dev/null
same() { local what=$1 sql=$2 b g; b=$(blue q postgres "$sql"); g=$(green q postgres "$sql")
  if [ "$b" = "$g" ]; then ok "cutover: $what are the same on both sides ($b)"; else fail "cutover: $what are the same on both sides (blue $b, green $g)"; fi; }
same "the orders" "SELECT count(*) || ':' || sum(amount) FROM orders"
same "the audit records (applied rows were not audited again)" "SELECT count(*) FROM tenantguard.audit_log"
same "the chain heads" "SELECT string_agg(tenant || ':' || seq || ':' || encode(hash, 'hex'), ',' ORDER BY tenant) FROM tenantguard.audit_head"
same "the security trail" "SELECT count(*) FROM tenantguard.security_log"
out=$(green q_err app "SELECT tenantguard.complete_cutover()" 2>&1)
check "green: the app role cannot complete a cutover" has "$out" "permission denied"
out=$(green q_err app "SELECT tenantguard.import_config('{}')" 2>&1)
check "green: the app role cannot import a configuration" has "$out" "permission denied"
out=$(green q postgres "SELECT tenantguard.complete_cutover()")
check "green: complete_cutover() moved the extension's and the app's sequences" \
  test "$(green q postgres "SELECT ('$out'::jsonb->'sequences') ? 'tenantguard.audit_log_id_seq'")" = "t"
green q postgres "DROP SUBSCRIPTION bg" >/dev/null 2>&1 || fail "green: DROP SUBSCRIPTION"
SOCK=$GDIR/sock; PORT=$GPORT
check_state "green after cutover"
ZED=$(tok '{"tid":"acme","sub":"zed","exp":4000000000,"iat":1700000000}')
q ops "SELECT tenantguard.revoke_user('acme', 'zed')" >/dev/null 2>&1
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ZED'); SELECT count(*) FROM orders; COMMIT;" 2>&1)
check "green after cutover: a revocation made on green is enforced (its sequence was moved)" has "$out" "revoked"
q ops "SELECT count(*) FROM tenantguard.verify_audit()" >/dev/null 2>&1
check "green after cutover: verification history records again (no 23505)" test "$(q ops "SELECT count(*) FROM tenantguard.verify_audit()" 2>&1 | grep -c 23505)" = "0"
check "green after cutover: every chain verifies, continued past the cutover" test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
check "green after cutover: the cutover is in the security trail" test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'cutover_completed'")" = "1"
check "blue: every chain still verifies" test "$(blue q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"

# --- 3. a publication of some tables ------------------------------------------------
blue q postgres "CREATE PUBLICATION orders_pub FOR TABLE orders, secrets" >/dev/null
green q postgres "CREATE DATABASE single" >/dev/null
single() { SOCK=$GDIR/sock PORT=$GPORT DB=single "$@"; }
single q postgres "CREATE EXTENSION pg_tenantguard;
  CREATE TABLE orders (id int PRIMARY KEY, tenant_id text NOT NULL, amount int); SELECT count(*) FROM tenantguard.protect('orders');
  CREATE TABLE secrets (id int PRIMARY KEY, tenant_id text NOT NULL, secret bytea); SELECT count(*) FROM tenantguard.protect('secrets');
  GRANT SELECT, INSERT, UPDATE, DELETE ON orders, secrets TO app;" >/dev/null
single q postgres "CREATE SUBSCRIPTION orders_sub CONNECTION 'host=$BDIR/sock port=$BPORT dbname=postgres user=postgres' PUBLICATION orders_pub$SUBOPTS" >/dev/null 2>&1 \
  || fail "single: CREATE SUBSCRIPTION"
for i in $(seq 1 300); do
  [ "$(single q postgres "SELECT count(*) FILTER (WHERE srsubstate NOT IN ('r', 's')) = 0 AND count(*) = 2 FROM pg_subscription_rel")" = t ] && break; sleep 0.1
done
blue q app "BEGIN; $CTX UPDATE orders SET amount = amount + 1 WHERE id = 3; COMMIT;" >/dev/null
for i in $(seq 1 100); do
  [ "$(single q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE action = 'UPDATE'")" -gt 0 ] && break; sleep 0.1
done
check "single: applied rows are recorded in this server's trail, as replicated" \
  test "$(single q postgres "SELECT count(*) > 0 AND bool_and(actor = 'replicated from subscription orders_sub') FROM tenantguard.audit_log WHERE tbl = 'public.orders'")" = "t"
check "single: its chains verify" test "$(single q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
out=$(single q_err app "BEGIN; $CTX SELECT tenantguard.decrypt_text(secret, 'secrets.' || id) FROM secrets WHERE id = 2; COMMIT;" 2>&1)
check "single: before import_config(), the tenant keys are missing (values do not decrypt)" has "$out" "22000\|no key\|key"
blue q postgres "SELECT tenantguard.export_config()" >"$GDIR/config.json"
out=$(single q_err app "SELECT tenantguard.export_config()" 2>&1)
check "single: export_config() is not for the app role" has "$out" "permission denied"
single bash -c 'psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d single -v cfg="$(cat "$0")" <<<"SELECT tenantguard.import_config(:'"'"'cfg'"'"')"' "$GDIR/config.json" >"$GDIR/import.log" 2>&1 \
  || fail "single: import_config(): $(cat "$GDIR/import.log")"
check "single: after import_config(), values encrypted on blue decrypt" \
  test "$(single q app "BEGIN; $CTX SELECT tenantguard.decrypt_text(secret, 'secrets.' || id) FROM secrets WHERE id = 2; COMMIT;" | tail -1)" = "acme secret 2"
MALLORY=$(tok '{"tid":"acme","sub":"mallory","exp":4000000000,"iat":1700000000}')
out=$(single q_err app "BEGIN; SELECT tenantguard.set_context('$MALLORY'); SELECT count(*) FROM orders; COMMIT;" 2>&1)
check "single: ... and a token revoked on blue is refused" has "$out" "revoked"
check "single: ... and authorize() decides as on blue (20 yes, 30 no)" \
  test "$(single q app "BEGIN; $CTX SELECT tenantguard.authorize('order:approve', '{\"amount\": 20}')::text || tenantguard.authorize('order:approve', '{\"amount\": 30}')::text; COMMIT;" | tail -1)" = "truefalse"
single bash -c 'psql -X -q -A -t -h "$SOCK" -p "$PORT" -U postgres -d single -v cfg="$(cat "$0")" <<<"SELECT tenantguard.import_config(:'"'"'cfg'"'"')"' "$GDIR/config.json" >"$GDIR/import2.log" 2>&1 \
  && ok "single: import_config() again is harmless (merges)" || fail "single: import_config() again: $(cat "$GDIR/import2.log")"
single q postgres "DROP SUBSCRIPTION orders_sub" >/dev/null 2>&1
check "no server process died, no tenantguard worker failed" bash -c "! grep -qE 'terminated by signal|\"tenantguard[^\"]*\" .* exited with exit code [^0]' '$BDIR/server.log' '$GDIR/server.log'"
summary
