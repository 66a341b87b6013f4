#!/usr/bin/env bash
# Issue 3: point select per transaction with revocation/allowlist checks on
# (10,000 revocations and 1,000 allowlists loaded) against checks off.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
psqlb >/dev/null <<'SQL'
CREATE TABLE bench_tg (id bigint PRIMARY KEY, tenant_id text NOT NULL, payload text NOT NULL);
INSERT INTO bench_tg SELECT g, 't' || ((g - 1) / 1000 + 1), md5(g::text) FROM generate_series(1, 1000000) g;
SELECT count(*) FROM tenantguard.protect('bench_tg');
CREATE TABLE bench_tokens (tid int PRIMARY KEY, tenant text NOT NULL, token text NOT NULL);
INSERT INTO bench_tokens SELECT i, 't' || i,
  tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'user' || i, 'exp', 4000000000, 'iat', 1800000000, 'ip', '10.0.0.1'))
  FROM generate_series(1, 1000) i;
INSERT INTO tenantguard.revocation (kind, tenant, user_id) SELECT 'user', 't' || (i % 1000 + 1), 'gone' || i FROM generate_series(1, 10000) i;
INSERT INTO tenantguard.ip_allowlist (tenant, allow) SELECT 't' || i, '{10.0.0.0/8, 2001:db8::/32}' FROM generate_series(1, 1000) i;
GRANT SELECT ON bench_tg, bench_tokens TO bench;
VACUUM ANALYZE;
SQL
switch() { psqlb -c "ALTER SYSTEM SET tenantguard.access_checks = $1" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3; }
echo "== revocation checks: on (10k revocations, 1k allowlists) vs off, $CLIENTS clients, ${SECS}s x $ROUNDS rounds"
for ROUND in $(seq 1 "$ROUNDS"); do
  if [ $((ROUND % 2)) -eq 1 ]; then switch on; pgb "checks on" benches/pgbench/tenantguard.sql; switch off; pgb "checks off" benches/pgbench/tenantguard.sql
  else switch off; pgb "checks off" benches/pgbench/tenantguard.sql; switch on; pgb "checks on" benches/pgbench/tenantguard.sql; fi
done
switch on
on=$(median ${TPS["checks on"]}); off=$(median ${TPS["checks off"]})
echo "checks on / off = $(ratio "$on" "$off") (target >= 0.97)"
