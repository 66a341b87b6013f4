#!/usr/bin/env bash
# Starts a cluster and a real PgBouncer (transaction pooling, 4 server
# connections for 32 clients) and runs the soak. TG_SOAK=long: 400k tx.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd); cd "$ROOT"
python3 -c "import psycopg" 2>/dev/null || pip install --quiet "psycopg[binary]>=3.1" 2>/dev/null
PORT=${TG_SOAK_PORT:-55480}; BPORT=$((PORT + 1))
tests/lib/cluster.sh start soak "$PORT" preload >/dev/null
DIR=$(tests/lib/cluster.sh dir soak); SOCK=$DIR/sock
mkdir -p "$DIR/bouncer"; chown postgres:postgres "$DIR/bouncer"
cat >"$DIR/bouncer/pgbouncer.ini" <<INI
[databases]
soak = host=$SOCK port=$PORT dbname=soak
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/bouncer/users.txt
pool_mode = transaction
default_pool_size = ${TG_SOAK_POOL:-4}
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = $DIR/bouncer/pgbouncer.log
pidfile = $DIR/bouncer/pgbouncer.pid
INI
printf '"app" ""\n"postgres" ""\n' >"$DIR/bouncer/users.txt"
chown postgres:postgres "$DIR/bouncer/"*
cleanup() { [ -f "$DIR/bouncer/pgbouncer.pid" ] && kill "$(cat "$DIR/bouncer/pgbouncer.pid")" 2>/dev/null; tests/lib/cluster.sh stop soak; }
trap cleanup EXIT
psql -X -q -h "$SOCK" -p "$PORT" -U postgres -c "CREATE DATABASE soak" >/dev/null
psql -X -q -h "$SOCK" -p "$PORT" -U postgres -d soak >/dev/null <<'SQL'
CREATE EXTENSION pg_tenantguard;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE soak (id bigserial PRIMARY KEY, tenant_id text NOT NULL, client int NOT NULL, seq int NOT NULL);
SELECT count(*) FROM tenantguard.protect('soak');
GRANT SELECT, INSERT ON soak TO app; GRANT USAGE ON SEQUENCE soak_id_seq TO app;
SQL
sudo -u postgres pgbouncer -d "$DIR/bouncer/pgbouncer.ini"
for i in $(seq 1 50); do psql -X -q -h 127.0.0.1 -p "$BPORT" -U app -d soak -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
N=50000; [ "${TG_SOAK:-}" = "long" ] && N=400000
python3 tests/soak/pooler_soak.py --dsn-direct "host=$SOCK port=$PORT dbname=soak user=postgres" \
  --dsn-pooler "host=127.0.0.1 port=$BPORT dbname=soak user=app" --clients 32 --tenants 8 --transactions "$N" --seed "${TG_SOAK_SEED:-42}"
