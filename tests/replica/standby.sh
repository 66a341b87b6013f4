#!/usr/bin/env bash
# A real streaming hot standby (pg_basebackup -R) of a primary full of state
# (tests/upgrade/state.sh). Read paths assign no transaction id on the
# primary and work on the standby; what must write refuses on the standby
# with 25006, naming what needs the primary. Then failover: the inbox left by
# background chaining is chained at promotion.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/e2e/lib.sh
. tests/upgrade/state.sh
PPORT=${TG_REPLICA_PORT:-55500}; SPORT=$((PPORT + 1))
CLUSTER_EXTRA_CONF=$'tenantguard.alert_notify = on\ntenantguard.standby_max_lag = 2' tests/lib/cluster.sh start "rep-primary-$PG" "$PPORT" preload >/dev/null || exit 1
trap 'tests/lib/cluster.sh stop "rep-standby-$PG"; tests/lib/cluster.sh stop "rep-primary-$PG"' EXIT
PDIR=$(tests/lib/cluster.sh dir "rep-primary-$PG")
SOCK=$PDIR/sock; PORT=$PPORT; LOG=$PDIR/server.log
populate_state
q postgres "CREATE ROLE maint LOGIN IN ROLE tenantguard_bypass; GRANT SELECT ON orders TO maint" >/dev/null
ACME=$(tok '{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}')
GLOBEX=$(tok '{"tid":"globex","sub":"gus","exp":4000000000,"iat":1700000000}')
NEWT=$(tok '{"tid":"newco","sub":"nina","exp":4000000000,"iat":1700000000}')
CTX="SELECT tenantguard.set_context('$ACME') IS NULL;"

# 1. On the primary: read paths leave the transaction without an XID.
no_xid() { local role=$1 what=$2 sql=$3 out
  out=$(q "$role" "BEGIN; $CTX $sql; SELECT 'xid:' || coalesce(txid_current_if_assigned()::text, 'none'); COMMIT;" 2>&1 | tail -1)
  if [ "$out" = "xid:none" ]; then ok "primary: $what assigns no transaction id"; else fail "primary: $what assigns no transaction id (got: $out)"; fi; }
no_xid app "decrypt_text()" "SELECT tenantguard.decrypt_text(secret, 'secrets.' || id) FROM secrets"
no_xid app "decrypt()" "SELECT tenantguard.decrypt(secret, 'secrets.' || id) FROM secrets"
no_xid app "encrypt() for a tenant that has a key" "SELECT tenantguard.encrypt('x')"
no_xid app "the policy accessors (a protected read)" "SELECT count(*) FROM orders"
no_xid app "authorize()" "SELECT tenantguard.authorize('order:approve', '{\"amount\": 20}')"
no_xid app "authorize_action()" "SELECT tenantguard.authorize_action('order:approve')"
no_xid app "explain_authorize()" "SELECT tenantguard.explain_authorize('order:approve', '{\"amount\": 20}')"
no_xid app "claims() and user_id()" "SELECT tenantguard.claims(), tenantguard.user_id()"
no_xid ops "status()" "SELECT tenantguard.status()"
# An identity provider's token (tests/vectors/idp.json): its issuer is read
# from a table, read-only.
python3 tests/vectors/issuers_sql.py | psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U ops -d postgres >/dev/null
IDP=$(python3 -c "import json; print([v for v in json.load(open('tests/vectors/idp.json'))['vectors'] if v['name'] == 'es256'][0]['token'])")
no_xid app "an identity provider's token (ES256, trusted issuer)" "SELECT tenantguard.set_context('$IDP') IS NULL; SELECT count(*) FROM orders"
no_xid ops "audit_digest()" "SELECT count(*) FROM tenantguard.audit_digest()"

# 2. A hot standby of it.
tests/lib/cluster.sh standby "rep-standby-$PG" "$SPORT" "rep-primary-$PG" >/dev/null || { fail "standby did not start"; summary; exit 1; }
SDIR=$(tests/lib/cluster.sh dir "rep-standby-$PG")
lsn=$(q postgres "SELECT pg_current_wal_lsn()")
SOCK=$SDIR/sock; PORT=$SPORT; LOG=$SDIR/server.log
for i in $(seq 1 100); do [ "$(q postgres "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null)" = t ] && break; sleep 0.1; done
check "standby: in recovery, caught up" test "$(q postgres "SELECT pg_is_in_recovery()")" = "t"
# Until it has replayed a commit, a fresh standby cannot tell its lag: it
# refuses contexts (fail closed) until the primary's heartbeat arrives.
out=$(q_err app "BEGIN; $CTX SELECT 1; COMMIT;" 2>&1)
if has "$out" "has replayed no commit from the primary since it started"; then ok "standby: before its first replayed commit, contexts are refused (lag unknown)"
elif [ "$(q postgres "SELECT pg_last_xact_replay_timestamp() IS NOT NULL")" = t ]; then ok "standby: (the heartbeat had already arrived)"
else fail "standby: before its first replayed commit (got: $out)"; fi
for i in $(seq 1 50); do [ "$(q postgres "SELECT pg_last_xact_replay_timestamp() IS NOT NULL")" = t ] && break; sleep 0.1; done
check "standby: the primary's heartbeat arrives within a second or two" test "$(q postgres "SELECT pg_last_xact_replay_timestamp() IS NOT NULL")" = "t"
check "standby: the app sees exactly its rows" test "$(q app "BEGIN; $CTX SELECT string_agg(id::text, ',' ORDER BY id) FROM orders; COMMIT;" | tail -1)" = "1,2,3"
out=$(q_err app "SELECT count(*) FROM orders" 2>&1)
check "standby: without a context, protected tables fail closed" has "$out" "no tenant context"
check "standby: an identity provider's token reads exactly its tenant's rows" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$IDP') IS NULL; SELECT string_agg(DISTINCT tenant_id, ',') FROM orders; COMMIT;" | tail -1)" = "acme"
check "standby: decrypt_text() of values encrypted on the primary" test "$(q app "BEGIN; $CTX SELECT tenantguard.decrypt_text(secret, 'secrets.' || id) FROM secrets WHERE id = 2; COMMIT;" | tail -1)" = "acme secret 2"
check "standby: encrypt() for a tenant that has a key, round trip" test "$(q app "BEGIN; $CTX SELECT tenantguard.decrypt_text(tenantguard.encrypt('round', 'a'), 'a'); COMMIT;" | tail -1)" = "round"
check "standby: authorize() decides (20 yes, 30 no)" test "$(q app "BEGIN; $CTX SELECT tenantguard.authorize('order:approve', '{\"amount\": 20}')::text || tenantguard.authorize('order:approve', '{\"amount\": 30}')::text; COMMIT;" | tail -1)" = "truefalse"
check "standby: explain_authorize() explains" test "$(q app "BEGIN; $CTX SELECT tenantguard.explain_authorize('order:approve', '{\"amount\": 20}') IS NOT NULL; COMMIT;" | tail -1)" = "t"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$(tok '{"tid":"acme","sub":"mallory","exp":4000000000,"iat":1700000000}')'); SELECT count(*) FROM orders; COMMIT;" 2>&1)
check "standby: a token revoked on the primary is refused" has "$out" "revoked"
check "standby: status() reports" test "$(q ops "SELECT tenantguard.status()->>'sql_version' IS NOT NULL")" = "t"
check "standby: audit_digest() lists the chains" test "$(q ops "SELECT count(*) > 0 FROM tenantguard.audit_digest()")" = "t"
n0=$(q postgres "SELECT count(*) FROM tenantguard.audit_verification")
check "standby: verify_audit() verifies every chain" test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
check "standby: ... and records nothing" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_verification")" = "$n0"
out=$(psql -X -q -A -t -h "$SOCK" -p "$PORT" -U ops -d postgres -c "SELECT count(*) FROM tenantguard.export_audit('acme')" 2>&1)
check "standby: export_audit() exports" test "$(printf '%s\n' "$out" | tail -1 | grep -cE '^[1-9][0-9]*$')" = "1"
check "standby: ... and says its digest was not recorded" has "$out" "digest was not recorded"
refused_on_standby() { local role=$1 what=$2 sql=$3 out
  out=$(q_err "$role" "$sql" 2>&1)
  if has "$out" "writes, and this server is a hot standby: run it on the primary"; then ok "standby: $what refused with 25006, naming the primary"
  else fail "standby: $what refused with 25006 (got: $out)"; fi; }
refused_on_standby app "the first encrypt() of a new tenant" "BEGIN; SELECT tenantguard.set_context('$NEWT') IS NULL; SELECT tenantguard.encrypt('x'); COMMIT;"
refused_on_standby app "log_event()" "BEGIN; $CTX SELECT tenantguard.log_event('export', 'report', '1'); COMMIT;"
refused_on_standby maint "bypass_secret()" "SELECT tenantguard.bypass_secret()"
out=$(psql -X -q -h "$SOCK" -p "$PORT" -U app -d postgres 2>&1 <<SQL
\\set VERBOSITY verbose
BEGIN;
SELECT tenantguard.set_context('$ACME');
SELECT tenantguard.log_event('x', 'y', '1');
SQL
)
check "standby: the refusal's SQLSTATE is 25006" has "$out" "25006"
# A lagging standby: revocations reach it by replay, so once replay is
# older than tenantguard.standby_max_lag (2 s here) every context is refused.
# The primary's heartbeat keeps an idle standby fresh.
sleep 3
check "standby: idle for longer than the bound, the heartbeat keeps contexts working" test "$(q app "BEGIN; $CTX SELECT count(*) FROM orders; COMMIT;" | tail -1)" = "3"
BOB=$(SOCK=$PDIR/sock PORT=$PPORT tok '{"tid":"acme","sub":"bob","exp":4000000000,"iat":1700000000}')
check "standby: bob's token works before" test "$(q app "BEGIN; SELECT tenantguard.set_context('$BOB') IS NULL; SELECT count(*) FROM orders; COMMIT;" | tail -1)" = "3"
q postgres "SELECT pg_wal_replay_pause()" >/dev/null
SOCK=$PDIR/sock PORT=$PPORT q ops "SELECT tenantguard.revoke_user('acme', 'bob')" >/dev/null
t0=$(date +%s.%N); refused=""
for i in $(seq 1 40); do
  out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$BOB') IS NULL; SELECT count(*) FROM orders; COMMIT;" 2>&1)
  if has "$out" "revocations may be missing"; then refused=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'); break; fi
  sleep 0.1
done
check "standby: replay paused, the token revoked on the primary is refused within the bound + 1 s (took ${refused:-never} s)" \
  bash -c "[ -n '$refused' ] && awk -v r='$refused' 'BEGIN{exit !(r <= 3.0)}'"
out=$(q_err app "BEGIN; $CTX SELECT count(*) FROM orders; COMMIT;" 2>&1)
check "standby: ... and so is every other context while it lags (42501, with the lag)" has "$out" "has replayed nothing from the primary for"
q postgres "SELECT pg_wal_replay_resume()" >/dev/null
lsn=$(SOCK=$PDIR/sock PORT=$PPORT q postgres "SELECT pg_current_wal_lsn()")
for i in $(seq 1 100); do [ "$(q postgres "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && break; sleep 0.1; done
sleep 1.2
check "standby: after resume, contexts work again" test "$(q app "BEGIN; $CTX SELECT count(*) FROM orders; COMMIT;" | tail -1)" = "3"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$BOB') IS NULL; SELECT count(*) FROM orders; COMMIT;" 2>&1)
check "standby: ... and the revoked token is refused as revoked" has "$out" "revoked"
# Alerts on a standby: the refusal's log line is the durable trace (the
# alert worker, which writes security_log and NOTIFYs, starts only once
# recovery ends, as every SPI worker does).
q_err app "SELECT tenantguard.set_context('not.a.token')" >/dev/null 2>&1
sleep 2
check "standby: a refusal leaves its tenantguard-alert line" grep -q 'tenantguard-alert: .*"event":"context_refused"' "$LOG"
check "standby: no background worker died" bash -c "! grep -qE 'background worker .* exited with exit code [^0]|terminated by signal' '$LOG'"

# Failover. Commits are synchronous (acknowledged only once the standby has
# them) and chained by the background writer, which is stopped (SIGSTOP)
# so that committed records wait in the inbox when the primary fails. After
# promotion, the startup worker chains them: no audited commit, no admin call.
primary() { SOCK=$PDIR/sock PORT=$PPORT "$@"; }
primary q postgres "ALTER SYSTEM SET synchronous_standby_names = '*'" >/dev/null
primary q postgres "ALTER SYSTEM SET tenantguard.audit_background = on" >/dev/null
primary q postgres "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
primary q app "BEGIN; $CTX INSERT INTO orders VALUES (600, 'acme', 1); COMMIT;" >/dev/null
wpid=""
for i in $(seq 1 50); do
  wpid=$(primary q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenantguard audit writer' LIMIT 1")
  [ -n "$wpid" ] && break; sleep 0.1
done
check "failover: the primary's audit writer is running" test -n "$wpid"
[ -n "$wpid" ] && kill -STOP "$wpid"
: >"$SDIR/acked"
for i in $(seq 1 20); do
  primary q app "BEGIN; $CTX INSERT INTO orders VALUES (600 + $i, 'acme', $i); COMMIT;" >/dev/null 2>&1 && echo "$i" >>"$SDIR/acked"
done
check "failover: 20 synchronous commits acknowledged" test "$(wc -l <"$SDIR/acked")" = "20"
waiting=$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")
check "failover: their records wait in the standby's inbox ($waiting rows)" test "$waiting" -gt 0
tests/lib/cluster.sh crash "rep-primary-$PG"
[ -n "$wpid" ] && kill -CONT "$wpid" 2>/dev/null
tests/lib/cluster.sh promote "rep-standby-$PG" || fail "failover: promote"
for i in $(seq 1 100); do
  [ "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = "0" ] && break; sleep 0.1
done
check "failover: after promotion the inbox is chained without any audited commit" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_inbox")" = "0"
check "failover: every acknowledged commit kept its row" test "$(q postgres "SELECT count(*) FROM orders WHERE id BETWEEN 601 AND 620")" = "20"
check "failover: ... and its audit record" \
  test "$(q postgres "SELECT count(DISTINCT row_key->>'id') FROM tenantguard.audit_log WHERE tbl = 'public.orders' AND action = 'INSERT' AND (row_key->>'id')::int BETWEEN 600 AND 620")" = "21"
check "failover: every chain verifies on the promoted server" test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
check "failover: the app works on the promoted server" test "$(q app "BEGIN; $CTX INSERT INTO orders VALUES (700, 'acme', 1); SELECT count(*) FROM orders WHERE id = 700; COMMIT;" | tail -1)" = "1"
summary
