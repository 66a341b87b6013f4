#!/usr/bin/env bash
# External-client tests against a real Postgres ($PG, default 15) that this
# script starts.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tests/e2e/lib.sh
PORT=${TG_E2E_PORT:-55450}
# (max_prepared_transactions for t_99_prepared.sh)
CLUSTER_EXTRA_CONF=$'tenantguard.alert_notify = on\nmax_prepared_transactions = 4' tests/lib/cluster.sh start "e2e-$PG" "$PORT" preload >/dev/null
DIR=$(tests/lib/cluster.sh dir "e2e-$PG"); SOCK=$DIR/sock; LOG=$DIR/server.log
trap 'tests/lib/cluster.sh stop "e2e-$PG"' EXIT

q postgres "CREATE EXTENSION pg_tenantguard;
  CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS; CREATE ROLE maint LOGIN IN ROLE tenantguard_bypass;
  CREATE ROLE ops LOGIN IN ROLE tenantguard_admin;
  CREATE TABLE t (id int PRIMARY KEY, tenant_id text NOT NULL);
  SELECT count(*) FROM tenantguard.protect('t');
  INSERT INTO t VALUES (1,'acme'),(2,'globex');
  GRANT SELECT, INSERT ON t TO app, maint;" >/dev/null
tok() { q postgres "SELECT tenantguard.sign_context('$1'::jsonb)"; }
ACME=$(tok '{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}')

for t in tests/e2e/t_${E2E_ONLY:-}*.sh; do
  echo "# $(basename "$t")"
  . "$t"
done
summary
