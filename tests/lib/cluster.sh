#!/usr/bin/env bash
# Throwaway Postgres 15 clusters for the demo, tests and benchmarks.
# Everything here runs as root and initdb refuses root, so the server runs
# as the `postgres` OS user, on a private port and socket directory under
# target/, with trust authentication on the socket and on 127.0.0.1 only.
#
#   cluster.sh start NAME PORT [preload]   (re)create and start
#   cluster.sh stop NAME                   stop (immediate) and keep files
#   cluster.sh restart NAME                restart
#   cluster.sh dir NAME                    print its directory
set -euo pipefail
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=$ROOT/target/tg-clusters
# Development signing keys for throwaway clusters only.
DEV_KEYS=${TG_SIGNING_KEYS:-"demo-2026:dev-signing-key-never-use-in-production-0001,old-2025:dev-signing-key-previous-generation-00002"}
DEV_AUDIT_KEYS=${TG_AUDIT_KEYS:-"audit-2026:dev-audit-chain-key-never-use-in-production-01"}
DEV_MASTER_KEY=${TG_MASTER_KEY:-"master-2026:dev-master-key-never-use-in-production-0000001"}

as_pg() { sudo -u postgres -- "$@"; }

cmd=${1:?usage}; name=${2:?name}
dir=$BASE/$name
case "$cmd" in
  dir) echo "$dir" ;;
  start)
    port=${3:?port}; preload=${4:-}
    if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "cluster.sh: port $port is already in use (another test cluster still running?); stop it or set another port" >&2
      exit 1
    fi
    rm -rf "$dir"; mkdir -p "$dir/sock"; chown -R postgres:postgres "$dir"; chmod 755 "$BASE" "$dir"
    as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1
    {
      echo "port = $port"
      echo "unix_socket_directories = '$dir/sock'"
      echo "listen_addresses = '127.0.0.1'"
      echo "max_connections = 200"
      echo "shared_buffers = ${CLUSTER_SHARED_BUFFERS:-256MB}"
      echo "fsync = off"
      echo "log_line_prefix = '%m [%p] %u@%d '"
      echo "log_min_messages = log"
      echo "tenantguard.signing_keys = '$DEV_KEYS'"
      echo "tenantguard.audit_keys = '$DEV_AUDIT_KEYS'"
      [ -n "${TG_NO_MASTER_KEY:-}" ] || echo "tenantguard.master_key = '$DEV_MASTER_KEY'"
      if [ -n "$preload" ]; then echo "shared_preload_libraries = 'pg_tenantguard'"; fi
      if [ -n "${CLUSTER_EXTRA_CONF:-}" ]; then printf '%s\n' "$CLUSTER_EXTRA_CONF"; fi
    } >>"$dir/data/postgresql.conf"
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    echo "$port" >"$dir/port"
    ;;
  restart)
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast restart >/dev/null ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true; fi ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
