# Sourced by benches: a preloaded bench cluster with database "bench".
. benches/lib.sh
PORT=${BENCH_PORT:-55460}
# Room for every table of a benchmark in shared buffers, so no variant pays
# for OS-cache reads the other does not.
# WAL room for a write-heavy minute between checkpoints, as Postgres asks
# of such a server: with the default max_wal_size (1GB) the bulk variants
# forced a checkpoint every 9 s ("checkpoints are occurring too
# frequently"), and each round paid for the last one's full-page images
# and dirty-buffer writes, no audit included.
CLUSTER_EXTRA_CONF="max_wal_size = 8GB
checkpoint_timeout = 30min
${CLUSTER_EXTRA_CONF:-}" \
CLUSTER_SHARED_BUFFERS=${CLUSTER_SHARED_BUFFERS:-2GB} tests/lib/cluster.sh start bench "$PORT" preload
SOCK=$(tests/lib/cluster.sh dir bench)/sock
trap 'tests/lib/cluster.sh stop bench' EXIT
psql -X -q -h "$SOCK" -p "$PORT" -U postgres -c "CREATE DATABASE bench"
psqlb -c "CREATE EXTENSION pg_tenantguard; CREATE EXTENSION pg_prewarm; CREATE ROLE bench LOGIN NOSUPERUSER NOBYPASSRLS;" >/dev/null
# pgcrypto is the crypto bench's baseline; the PG 18 wheel has no OpenSSL.
psqlb -c "CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null 2>&1 || echo "(no pgcrypto on Postgres $PG: the crypto bench cannot run here)"
# The same application role with background audit chaining (benches/audit.sh).
psqlb -c "CREATE ROLE bench_bg LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE bench; ALTER ROLE bench_bg SET tenantguard.audit_background = on;" >/dev/null
# rounds helper: rounds NAME SCRIPT NAME SCRIPT ... (alternating order each round)
rounds() {
  local -a names=() scripts=()
  while [ $# -gt 0 ]; do names+=("$1"); scripts+=("$2"); shift 2; done
  local n=${#names[@]}
  for ROUND in $(seq 1 "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
      local i=$(( (k + ROUND - 1) % n ))
      pgb "${names[$i]}" "${scripts[$i]}" ${PGB_EXTRA:-}
    done
  done
}
