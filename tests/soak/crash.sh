#!/usr/bin/env bash
# Crash safety: concurrent audited writes from several tenants, then
# `pg_ctl stop -m immediate` (or kill -9 of one backend) at a random moment,
# restart, and check:
#   * every committed write has its audit record;
#   * no audit record exists for a write that did not commit;
#   * verify_audit() passes for every tenant.
# Repeated with different seeds. TG_SOAK=long runs more rounds.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd); cd "$ROOT"
PORT=${TG_CRASH_PORT:-55495}
BIN=/usr/lib/postgresql/15/bin
ROUNDS=4; [ "${TG_SOAK:-}" = "long" ] && ROUNDS=12
tests/lib/cluster.sh start crash "$PORT" preload >/dev/null
DIR=$(tests/lib/cluster.sh dir crash); SOCK=$DIR/sock
trap 'tests/lib/cluster.sh stop crash' EXIT
psqlc() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres "$@"; }
psqlc >/dev/null <<'SQL'
CREATE EXTENSION pg_tenantguard;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE ledger (id bigserial PRIMARY KEY, tenant_id text NOT NULL, amount int NOT NULL);
SELECT count(*) FROM tenantguard.protect('ledger');
GRANT SELECT, INSERT, UPDATE ON ledger TO app; GRANT USAGE ON SEQUENCE ledger_id_seq TO app;
CREATE TABLE tokens (tid int PRIMARY KEY, token text);
INSERT INTO tokens SELECT i, tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'u' || i, 'exp', 4000000000, 'iat', 1700000000)) FROM generate_series(1, 6) i;
GRANT SELECT ON tokens TO app;
SQL
cat > "$DIR/write.sql" <<'EOF2'
\set t random(1, 6)
\set a random(1, 1000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) FROM tokens WHERE tid = :t;
INSERT INTO ledger (amount) VALUES (:a);
UPDATE ledger SET amount = amount + 1 WHERE id = (SELECT max(id) FROM ledger);
COMMIT;
EOF2
passed=0; failed=0
report() { if [ "$2" = ok ]; then passed=$((passed+1)); echo "ok - $1"; else failed=$((failed+1)); echo "not ok - $1"; fi; }
for seed in $(seq 1 "$ROUNDS"); do
  RANDOM=$((seed * 7919))
  mode=$([ $((seed % 2)) -eq 0 ] && echo "kill -9 of a backend" || echo "pg_ctl stop -m immediate")
  # The second half of the seeds with background chaining: the crash also
  # hits records waiting in the inbox and the audit writer mid-pass.
  if [ "$seed" -gt $((ROUNDS / 2)) ]; then
    psqlc -c "ALTER SYSTEM SET tenantguard.audit_background = on" -c "SELECT pg_reload_conf()" >/dev/null
    mode="$mode, background chaining"
  fi
  "$BIN/pgbench" -n -c 6 -j 2 -T 30 -h "$SOCK" -p "$PORT" -U app -f "$DIR/write.sql" postgres >"$DIR/pgbench.$seed.log" 2>&1 &
  bench=$!
  delay=$(( (RANDOM % 2500) + 500 ))
  sleep "$(awk -v d="$delay" 'BEGIN{printf "%.3f", d/1000}')"
  if [ $((seed % 2)) -eq 0 ]; then
    victim=$(pgrep -u postgres -f "postgres: app postgres" | head -1)
    [ -n "$victim" ] && kill -9 "$victim"
    sleep 2
  else
    sudo -u postgres "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1
  fi
  wait "$bench" 2>/dev/null
  # Restart (after kill -9 the postmaster already reinitialised; ensure it is up).
  if ! sudo -u postgres "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    sudo -u postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start >/dev/null \
      || { echo "crash.sh: the cluster did not come back after the crash" >&2; tests/lib/cluster.sh why crash; exit 1; }
  fi
  for i in $(seq 1 60); do psqlc -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.5; done
  # (Chains what committed transactions left in the inbox; a no-op without
  # background chaining.)
  psqlc -c "SELECT tenantguard.audit_flush()" >/dev/null
  inbox=$(psqlc -c "SELECT count(*) FROM tenantguard.audit_inbox")
  rows=$(psqlc -c "SELECT count(*) FROM ledger")
  ins=$(psqlc -c "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.ledger' AND action = 'INSERT'")
  missing=$(psqlc -c "SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM tenantguard.audit_log a WHERE a.tbl = 'public.ledger' AND a.action = 'INSERT' AND a.row_key->>'id' = l.id::text)")
  orphans=$(psqlc -c "SELECT count(*) FROM tenantguard.audit_log a WHERE a.tbl = 'public.ledger' AND a.action = 'INSERT' AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.id::text = a.row_key->>'id')")
  verify=$(psqlc -c "SELECT coalesce(bool_and(ok), true) FROM tenantguard.verify_audit()")
  echo "# seed $seed ($mode after ${delay} ms): $rows committed rows, $ins INSERT records, $missing without record, $orphans records without row, inbox after audit_flush: $inbox, chains verify=$verify"
  [ "$missing" = 0 ] && [ "$orphans" = 0 ] && [ "$rows" -gt 0 ] && [ "$inbox" = 0 ] && r=ok || r=fail
  report "seed $seed: every committed write audited, no orphan records" $r
  [ "$verify" = t ] && r=ok || r=fail
  report "seed $seed: verify_audit passes for every tenant" $r
done
echo "crashes survived: $ROUNDS; records lost: $(psqlc -c "SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM tenantguard.audit_log a WHERE a.tbl = 'public.ledger' AND a.action = 'INSERT' AND a.row_key->>'id' = l.id::text)")"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
