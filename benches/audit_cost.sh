#!/usr/bin/env bash
# Issue 26: what the audit costs, in server CPU per audited row, with the
# background writer's work counted, against the usual ways of auditing.
#
# Each transaction sets a context, then one single-row INSERT and one
# single-row UPDATE on its own copy of a protected table: 2 audited rows.
# Variants, alternating, one table each:
#   none                       no audit trigger
#   noop                       a no-op PL/pgSQL row trigger
#   emit                       PL/pgSQL pg_logical_emit_message(true, ..., row_to_json(NEW))
#   jsonb                      PL/pgSQL to_jsonb(NEW) into an unindexed table
#   transition                 a statement trigger with transition tables
#   chain_sql                  the trail's storage and chaining in plain SQL
#                              (PL/pgSQL): the record into a table shaped as
#                              the trail (monthly partitions, BRIN on at,
#                              B-tree on (tenant, seq)), the tenant's head
#                              row locked and moved, sha256 over the previous
#                              hash; no actor, roles or keys
#   tg                         tenantguard, chained at commit
#   tg_bg                      tenantguard, background writer (role bench_bg)
# Per variant and client count (1 and 4): tps with the writer's catch-up
# counted (transactions / (run + drain)), and server CPU per transaction,
# every Postgres process included: the client backends over the middle of
# the run, and every other process (the audit writer, WAL writer,
# checkpointer, autovacuum) from then until the writer has caught up,
# divided by the records it had to chain. Then: the backlog of a 60 s
# background run at 4 clients, at its start and end, and bulk statements
# (1,000 rows each).
#   BENCH_SECONDS (default 10), BENCH_ROUNDS (3), BACKLOG_SECONDS (60);
#   COST_VARIANTS (a subset of the variants, "none" always among them),
#   COST_PARTS (default "single bulk backlog")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
BACKLOG_SECONDS=${BACKLOG_SECONDS:-60}
DATA=$(tests/lib/cluster.sh dir bench)/data
VARIANTS=${COST_VARIANTS:-none noop emit jsonb transition chain_sql tg tg_bg}
PARTS=${COST_PARTS:-single bulk backlog}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
psqlb <<'SQL' >/dev/null
CREATE TABLE bench_tokens (tid int PRIMARY KEY, tenant text NOT NULL, token text NOT NULL);
INSERT INTO bench_tokens SELECT i, 't' || i,
  tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'user' || i, 'exp', 4000000000, 'iat', 1700000000))
  FROM generate_series(1, 100) i;
GRANT SELECT ON bench_tokens TO bench;
CREATE TABLE plain_log (tbl text, op text, row_data jsonb, at timestamptz DEFAULT now());
CREATE FUNCTION t_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION t_emit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN PERFORM pg_logical_emit_message(true, 'audit', row_to_json(NEW)::text); RETURN NULL; END $$;
CREATE FUNCTION t_jsonb() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN INSERT INTO plain_log (tbl, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW)); RETURN NULL; END $$;
CREATE FUNCTION t_transition() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN INSERT INTO plain_log (tbl, op, row_data) SELECT TG_TABLE_NAME, TG_OP, to_jsonb(n) FROM new_rows n; RETURN NULL; END $$;
ALTER SYSTEM SET tenantguard.audit_guard = off; SELECT pg_reload_conf();
SQL
psqlb -f benches/floor.sql >/dev/null
sleep 0.5
for v in $VARIANTS; do
  psqlb <<SQL >/dev/null
CREATE TABLE c_$v (id bigserial PRIMARY KEY, tenant_id text NOT NULL, payload text);
INSERT INTO c_$v (tenant_id, payload) SELECT 't' || ((g - 1) / 100 + 1), md5(g::text) FROM generate_series(1, 10000) g;
SELECT setval('c_${v}_id_seq', 10001);
SELECT count(*) FROM tenantguard.protect('c_$v');
GRANT SELECT, INSERT, UPDATE ON c_$v TO bench;
GRANT USAGE ON SEQUENCE c_${v}_id_seq TO bench;
SQL
  case $v in tg|tg_bg) ;; *)
    psqlb -c "DROP TRIGGER tenantguard_audit ON c_$v" -c "DROP TRIGGER tenantguard_audit_truncate ON c_$v" >/dev/null ;;
  esac
  case $v in
    chain_sql) psqlb -c "CREATE TRIGGER a AFTER INSERT OR UPDATE ON c_$v FOR EACH ROW EXECUTE FUNCTION floor_chain()" >/dev/null ;;
    noop|emit|jsonb) psqlb -c "CREATE TRIGGER a AFTER INSERT OR UPDATE ON c_$v FOR EACH ROW EXECUTE FUNCTION t_$v()" >/dev/null ;;
    transition) psqlb -c "CREATE TRIGGER a_i AFTER INSERT ON c_$v REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION t_transition()" \
                      -c "CREATE TRIGGER a_u AFTER UPDATE ON c_$v REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION t_transition()" >/dev/null ;;
  esac
  cat > "target/bench_cost_$v.sql" <<EOF
\\set t random(1, 100)
\\set k random(1, 10000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
INSERT INTO c_$v (payload) VALUES (md5(:k::text));
UPDATE c_$v SET payload = md5(random()::text) WHERE id = (:t - 1) * 100 + :k % 100 + 1;
COMMIT;
EOF
  cat > "target/bench_bulk_$v.sql" <<EOF
\\set t random(1, 100)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
INSERT INTO c_$v (payload) SELECT md5(g::text) FROM generate_series(1, 1000) g;
COMMIT;
EOF
done
psqlb -c "ALTER SYSTEM RESET tenantguard.audit_guard" -c "SELECT pg_reload_conf()" -c "VACUUM ANALYZE" >/dev/null

postmaster=$(head -n 1 "$DATA/postmaster.pid")
# Per-pid ticks as "pid:ticks" words, and the ticks spent between two such
# readings: a process alive at both counts its difference, one started in
# between counts whole, one that ended in between counts what it had spent
# by the first reading as nothing more (its last ticks are lost, never
# negative).
snap() { local p f; for p in "$@"; do f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue; set -- $f; echo "$p:$((${12} + ${13}))"; done; }
spent() { # spent "BEFORE" "AFTER"
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, /[ \n]+/); for (i = 1; i <= n; i++) if (split(x[i], kv, ":") == 2) before[kv[1]] = kv[2]
    n = split(b, y, /[ \n]+/); for (i = 1; i <= n; i++) if (split(y[i], kv, ":") == 2) t += kv[2] - ((kv[1] in before) ? before[kv[1]] : 0)
    print t + 0 }'
}
inbox() { psqlb -c "SELECT coalesce(sum(cardinality(tenant)), 0) FROM tenantguard.audit_inbox"; }
lastid() { psqlb -c "SELECT last_value FROM c_${1}_id_seq"; }
HZ=$(getconf CLK_TCK)
declare -A TPS CPU
# run VARIANT SCRIPT_KIND CLIENTS SECONDS ROWS_PER_TX: one run; appends to
# TPS[$v/$c] (with the drain) and CPU[$v/$c] (µs per transaction).
run() {
  local v=$1 kind=$2 c=$3 s=$4 rows=$5 user=bench log
  [ "$v" = tg_bg ] && user=bench_bg
  log=$(mktemp)
  "$BIN/pgbench" -n -M prepared -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$s" -h "$SOCK" -p "$PORT" -U "$user" \
    -f "target/bench_${kind}_$v.sql" bench >"$log" 2>&1 &
  local pg=$!
  sleep 2
  local backends others b1 o1 x1 x2 b2 backlog t_end t_done o2 n tps
  backends=$(psqlb -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'")
  others=$(pgrep -P "$postmaster" | grep -vxF "$backends" || true)
  b1=$(backend_ticks $backends); o1=$(snap $others); x1=$(lastid "$v"); backlog=$(inbox)
  sleep $((s - 3))
  b2=$(backend_ticks $backends); x2=$(lastid "$v")
  wait $pg || { echo "pgbench failed for $v:"; tail -5 "$log"; exit 1; }
  t_end=$(date +%s.%N)
  while [ "$(inbox)" != 0 ]; do sleep 0.05; done
  t_done=$(date +%s.%N)
  others=$(pgrep -P "$postmaster" | grep -vxF "$backends" || true)
  o2=$(spent "$o1" "$(snap $others)")
  n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log")
  local last; last=$(lastid "$v")
  # Rows written after the first read: the other processes' work covers
  # them and the backlog there was then.
  awk -v tps="$tps" -v s="$s" -v te="$t_end" -v td="$t_done" -v b="$((b2 - b1))" -v xb="$((x2 - x1))" \
      -v o="$o2" -v after="$((last - x1))" -v backlog="$backlog" -v rows="$rows" -v hz="$HZ" -v kind="$kind" '
    BEGIN {
      d = td - te; if (d < 0) d = 0
      t = tps * s / (s + d)
      # transactions in each window: INSERTs drawn from the sequence
      per = (kind == "bulk") ? 1000 : 1
      txb = xb / per; txo = after / per + backlog / rows
      cpu = (b / hz * 1e6) / txb + (o / hz * 1e6) / txo
      printf "%.1f %.1f %.2f\n", t, cpu, d
    }' >"$log.r"
  read -r t cpu d <"$log.r"
  TPS[$v/$c/$kind]="${TPS[$v/$c/$kind]:-} $t"; CPU[$v/$c/$kind]="${CPU[$v/$c/$kind]:-} $cpu"
  printf '   %-10s %-6s %d client(s): %9.1f tps (drain %5.2f s)  %7.1f us server CPU per transaction\n' "$v" "$kind" "$c" "$t" "$d" "$cpu"
  rm -f "$log" "$log.r"
}
if part single; then
for c in 1 4; do
  echo "== audit cost: INSERT + UPDATE per transaction (2 audited rows), $c client(s), ${SECS}s x $ROUNDS rounds"
  for ROUND in $(seq 1 "$ROUNDS"); do
    set -- $VARIANTS; n=$#
    for k in $(seq 0 $((n - 1))); do
      i=$(( (k + ROUND - 1) % n + 1 )); run "${!i}" cost "$c" "$SECS" 2
    done
  done
done
echo
echo "| variant | tps vs none, 1 / 4 clients (drain counted) | server CPU per transaction, 1 / 4 | extra CPU per audited row, 1 / 4 |"
echo "|---|---|---|---|"
for v in $VARIANTS; do
  r1=(); r2=(); r3=()
  for c in 1 4; do
    t=$(median ${TPS[$v/$c/cost]}); t0=$(median ${TPS[none/$c/cost]})
    cp=$(median ${CPU[$v/$c/cost]}); c0=$(median ${CPU[none/$c/cost]})
    r1+=("$(ratio "$t" "$t0")"); r2+=("$cp")
    r3+=("$(awk -v a="$cp" -v b="$c0" 'BEGIN {printf "%+.1f", (a - b) / 2}')")
  done
  echo "| $v | ${r1[0]} / ${r1[1]} | ${r2[0]} / ${r2[1]} µs | ${r3[0]} / ${r3[1]} µs |"
done
echo "(targets: tg and tg_bg <= 10 us per audited row; tg_bg >= 0.85x none at 1 client and >= 0.7x at 4; tg >= 0.7x at both)"
fi

if part bulk; then
echo
echo "== audit cost, bulk: one INSERT of 1,000 rows per transaction, 1 client, ${SECS}s x $ROUNDS rounds"
BULK=""; for v in none tg tg_bg; do case " $VARIANTS " in *" $v "*) BULK="$BULK $v";; esac; done
for ROUND in $(seq 1 "$ROUNDS"); do
  for v in $BULK; do run "$v" bulk 1 "$SECS" 1000; done
done
c0=$(median ${CPU[none/1/bulk]})
for v in ${BULK# none}; do
  cp=$(median ${CPU[$v/1/bulk]})
  echo "bulk $v: $(awk -v a="$cp" -v b="$c0" 'BEGIN {printf "%.1f", (a - b) / 1000}') us extra server CPU per row (none: $(awk -v b="$c0" 'BEGIN {printf "%.1f", b / 1000}') us per row; target <= 8)"
done
fi

if part backlog; then
echo
echo "== background writer backlog: 4 clients, ${BACKLOG_SECONDS}s"
log=$(mktemp)
"$BIN/pgbench" -n -M prepared -c 4 -j 2 -T "$BACKLOG_SECONDS" -h "$SOCK" -p "$PORT" -U bench_bg -f target/bench_cost_tg_bg.sql bench >"$log" 2>&1 &
pg=$!
samples=""
for i in $(seq 1 $((BACKLOG_SECONDS / 2 - 1))); do sleep 2; samples="$samples $(( i * 2 )):$(inbox)"; done
wait $pg
t0=$(date +%s.%N); while [ "$(inbox)" != 0 ]; do sleep 0.05; done; t1=$(date +%s.%N)
first=""; last=""
for x in $samples; do
  s=${x%%:*}
  if [ "$s" -le 10 ]; then first="$first ${x#*:}"; fi
  if [ "$s" -ge $((BACKLOG_SECONDS - 10)) ]; then last="$last ${x#*:}"; fi
done
echo "inbox records, every 2 s: $samples"
echo "backlog median: first 10 s $(median $first), last 10 s $(median $last) (target: not growing); $(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log") tps; drained $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s after the run"
rm -f "$log"
fi
echo "chains verify after the runs: $(psqlb -c "SELECT bool_and(ok) FROM tenantguard.verify_audit()")"
