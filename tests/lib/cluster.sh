#!/usr/bin/env bash
# Throwaway Postgres clusters for the demo, tests and benchmarks.
# Everything here runs as root and initdb refuses root, so the server runs
# as the `postgres` OS user, on a private port, with trust authentication on
# its socket and on 127.0.0.1 only.
#
# Where the files live. The `postgres` user must be able to enter every
# directory above a cluster's data, and a checkout may sit in a private
# directory (root's home is 0700; so is `mktemp -d`). So a cluster's data,
# socket and logs live under a runtime directory outside the checkout:
#   ${TG_RUNTIME_DIR:-/var/tmp/tenantguard-<uid>-<hash of the checkout path>}/NAME
# owned by root (0755), each cluster's folder owned by postgres. Nothing in
# the checkout is widened. target/tg-clusters/NAME is a link to it, so the
# logs are where they always were.
#
#   cluster.sh start NAME PORT [preload]   (re)create and start
#   cluster.sh crash NAME / promote NAME     immediate stop / promote a standby
#   cluster.sh standby NAME PORT PRIMARY   (re)create a streaming hot standby of PRIMARY, start it
#   cluster.sh stop NAME                   stop (fast) and keep files
#   cluster.sh restart NAME                restart
#   cluster.sh dir NAME                    print its directory
#   cluster.sh runtime NAME                create NAME's folder (owned by postgres), print it
#   cluster.sh why NAME                    print why NAME did not start (log tails)
#   cluster.sh clean                       stop all and remove every runtime folder
#   cluster.sh stopall                     stop every cluster of this checkout now, keep files
#
# PG=15|16|18 picks the server (tests/lib/pg.sh); PG_BIN overrides its bindir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TG_ROOT=$ROOT; . "$ROOT/tests/lib/pg.sh"
BIN=${PG_BIN:-${PG_BINDIR:-}}
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || { echo "cluster.sh: Postgres $PG is not installed (make deps)" >&2; exit 1; }
LINKS=$ROOT/target/tg-clusters
# Development signing keys for throwaway clusters only.
DEV_KEYS=${TG_SIGNING_KEYS:-"demo-2026:dev-signing-key-never-use-in-production-0001,old-2025:dev-signing-key-previous-generation-00002"}
DEV_AUDIT_KEYS=${TG_AUDIT_KEYS:-"audit-2026:dev-audit-chain-key-never-use-in-production-01"}
DEV_MASTER_KEY=${TG_MASTER_KEY:-"master-2026:dev-master-key-never-use-in-production-0000001"}

as_pg() { sudo -u postgres -- "$@"; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

BASE=$(tg_runtime_base)

# The base is created by us, owned by us, and not a link: a name in a
# world-writable /var/tmp could otherwise be planted by another local user.
ensure_base() {
  if [ -L "$BASE" ] || { [ -e "$BASE" ] && [ "$(stat -c %u "$BASE")" != "$(id -u)" ]; }; then
    die "$BASE exists but is a link or is not owned by $(id -un); remove it or set TG_RUNTIME_DIR"
  fi
  mkdir -p "$BASE"; chmod 755 "$BASE"
  local parent; parent=$(dirname "$BASE")
  if ! as_pg test -x "$parent"; then
    die "the postgres OS user cannot enter $parent; set TG_RUNTIME_DIR to a directory it can reach"
  fi
  mkdir -p "$LINKS"
}

# A fresh folder for NAME, owned by postgres, linked from target/tg-clusters.
fresh() {
  local d=$BASE/$1
  ensure_base
  rm -rf "$d"; mkdir -p "$d/sock"; chown -R postgres:postgres "$d"; chmod 755 "$d"
  ln -sfn "$d" "$LINKS/$1"
}

# Why a cluster did not start: the tails of its logs and where to look.
why() {
  local d=$BASE/$1 f shown=""
  for f in "$d/initdb.log" "$d/server.log"; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; shown=1
  done
  [ -n "$shown" ] || echo "--- no log was written under $d" >&2
  echo "--- look further: less $d/server.log (also linked as target/tg-clusters/$1)" >&2
}

# One line that says what went wrong: the first error-like line of the first
# log that has one (the server logs the cause before its FATAL), without
# the log line prefix. `last` instead takes the newest (a log that grows
# across restarts).
first_error() {
  local pick=head f line
  if [ "$1" = last ]; then pick=tail; shift; fi
  for f in "$@"; do
    line=$(grep -hE 'FATAL|PANIC|ERROR|invalid value|could not|Permission denied|No space|in use' "$f" 2>/dev/null | $pick -n 1)
    if [ -n "$line" ]; then
      printf '%s\n' "$line" | sed -E 's/^.*(LOG|FATAL|PANIC|ERROR): +//'
      return
    fi
  done
  echo "no reason in the logs"
}

cmd=${1:?usage: cluster.sh start|stop|restart|dir|runtime|why|clean|stopall NAME}
if [ "$cmd" = stopall ]; then
  # After a layer ran out of time: its servers detached from its process
  # group, so stop them by their pid (SIGQUIT = immediate), whatever the
  # major version that started them.
  for pidf in "$BASE"/*/data/postmaster.pid; do
    [ -f "$pidf" ] || continue
    pid=$(head -n 1 "$pidf")
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    kill -QUIT "$pid" 2>/dev/null && echo "cluster.sh: stopped $(basename "$(dirname "$(dirname "$pidf")")") (pid $pid)"
  done
  exit 0
fi
if [ "$cmd" = clean ]; then
  if [ -d "$BASE" ] && [ ! -L "$BASE" ]; then
    for d in "$BASE"/*/; do
      [ -f "$d/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$d/data" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "$BASE"
  fi
  rm -rf "$LINKS"
  exit 0
fi
name=${2:?name}
case "$name" in */*|.*|"") die "bad cluster name '$name'" ;; esac
dir=$BASE/$name
case "$cmd" in
  dir) echo "$dir" ;;
  runtime) fresh "$name"; echo "$dir" ;;
  why) why "$name" ;;
  start)
    port=${3:?port}; preload=${4:-}
    if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "cluster '$name' cannot start: port $port is already in use (another test cluster still running?); stop it or set another port"
    fi
    fresh "$name"
    if ! as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
      echo "cluster.sh: initdb failed for cluster '$name': $(first_error "$dir/initdb.log")" >&2
      why "$name"; exit 1
    fi
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
    if ! as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >"$dir/pg_ctl.log" 2>&1; then
      echo "cluster.sh: cluster '$name' did not start on port $port: $(first_error "$dir/server.log" "$dir/pg_ctl.log")" >&2
      why "$name"; exit 1
    fi
    echo "$port" >"$dir/port"
    ;;
  standby)
    port=${3:?port}; primary=${4:?primary}
    pdir=$BASE/$primary
    [ -f "$pdir/port" ] || die "primary '$primary' is not running"
    if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
    fresh "$name"
    if ! as_pg "$BIN/pg_basebackup" -h "$pdir/sock" -p "$(cat "$pdir/port")" -U postgres -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1; then
      echo "cluster.sh: pg_basebackup of '$primary' failed: $(first_error "$dir/basebackup.log")" >&2; exit 1
    fi
    { echo "port = $port"; echo "unix_socket_directories = '$dir/sock'"; echo "hot_standby = on";
      if [ -n "${CLUSTER_EXTRA_CONF:-}" ]; then printf '%s\n' "$CLUSTER_EXTRA_CONF"; fi; } >>"$dir/data/postgresql.conf"
    if ! as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >"$dir/pg_ctl.log" 2>&1; then
      echo "cluster.sh: standby '$name' did not start on port $port: $(first_error "$dir/server.log" "$dir/pg_ctl.log")" >&2
      why "$name"; exit 1
    fi
    echo "$port" >"$dir/port"
    ;;
  restart)
    if ! as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast restart >"$dir/pg_ctl.log" 2>&1; then
      echo "cluster.sh: cluster '$name' did not restart: $(first_error last "$dir/server.log" "$dir/pg_ctl.log")" >&2
      why "$name"; exit 1
    fi ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true; fi ;;
  crash)
    # As a failing primary: no shutdown checkpoint, nothing flushed.
    if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; fi ;;
  promote)
    as_pg "$BIN/pg_ctl" -D "$dir/data" -w -t 60 promote >"$dir/pg_ctl.log" 2>&1 || { echo "cluster.sh: promoting '$name' failed: $(first_error "$dir/pg_ctl.log")" >&2; exit 1; } ;;
  *) die "unknown command $cmd" ;;
esac
