#!/usr/bin/env bash
# Issue 23: a point select through a Citus coordinator. The same transaction
# shape on both sides (a token looked up and set, one select naming the
# tenant, so that Citus routes it to one shard): with tenantguard's context
# on a protected distributed table, against an explicit WHERE on the same
# table distributed without RLS (the token set into a plain GUC). Alternating,
# medians of 3, and the server CPU per transaction of all three nodes
# (every process under the three postmasters, exited backends included).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
export PG=15
. benches/lib.sh
. tests/e2e/lib.sh
. tests/citus/lib.sh
# As docs/operations.md recommends: propagation on in the configuration, so
# set_context() needs one SET LOCAL per transaction, not two.
export CITUS_EXTRA_CONF="citus.propagate_set_commands = 'local'"
citus_start "${BENCH_CITUS_PORT:-55560}"
trap citus_stop EXIT
SOCK=$CDIR/sock; PORT=$CPORT
coord q postgres "CREATE DATABASE bench" >/dev/null 2>&1 || true
# Citus works per database: the bench uses postgres (where it is set up).
# A third variant isolates Citus's own share: the baseline, with the same
# token forwarded to the worker by a SET LOCAL issued through SPI (what
# set_context() does on Citus; Citus forwards only SET statements), into a
# plain setting nobody verifies. tenantguard's own cost is the step from it
# to the context variant; Citus's forwarding is the step from the baseline.
psqlb() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres "$@"; }
psqlb <<'SQL' >/dev/null
CREATE ROLE bench LOGIN NOSUPERUSER NOBYPASSRLS;
SELECT tenantguard.citus_setup();
CREATE TABLE bench_plain (id bigint NOT NULL, tenant_id text NOT NULL, payload text NOT NULL, PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('bench_plain', 'tenant_id');
INSERT INTO bench_plain SELECT g, 't' || ((g - 1) / 1000 + 1), md5(g::text) FROM generate_series(1, 100000) g;
CREATE TABLE bench_tg (id bigint NOT NULL, tenant_id text NOT NULL, payload text NOT NULL, PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('bench_tg', 'tenant_id');
INSERT INTO bench_tg SELECT * FROM bench_plain;
SELECT count(*) FROM tenantguard.protect('bench_tg');
CREATE TABLE bench_tokens (tid int PRIMARY KEY, token text NOT NULL);
INSERT INTO bench_tokens SELECT i, tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'user' || i,
  'exp', 4000000000, 'iat', 1700000000)) FROM generate_series(1, 100) i;
GRANT SELECT ON bench_plain, bench_tg, bench_tokens TO bench;
CREATE FUNCTION bench_forward(tok text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
  EXECUTE pg_catalog.format('SET LOCAL app.token = %L', tok);
  RETURN true;
END $f$;
SQL
cat >"$CDIR/plain.sql" <<'SQL'
\set t random(1, 100)
\set k random(1, 1000)
BEGIN;
SELECT set_config('app.token', token, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_plain WHERE tenant_id = 't' || :t AND id = (:t - 1) * 1000 + :k;
COMMIT;
SQL
cat >"$CDIR/fwd.sql" <<'SQL'
\set t random(1, 100)
\set k random(1, 1000)
BEGIN;
SELECT bench_forward(token) FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_plain WHERE tenant_id = 't' || :t AND id = (:t - 1) * 1000 + :k;
COMMIT;
SQL
cat >"$CDIR/tg.sql" <<'SQL'
\set t random(1, 100)
\set k random(1, 1000)
BEGIN;
SELECT tenantguard.set_context(token) IS NULL FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_tg WHERE tenant_id = 't' || :t AND id = (:t - 1) * 1000 + :k;
COMMIT;
SQL
# Server CPU of the whole cluster (three postmasters, every process under
# them: each postmaster's own and reaped children's utime+stime, plus its
# live children's), in clock ticks: read before and after a run, the
# difference is what the run cost the servers, backends that exited with
# pgbench's connections included.
cluster_ticks() {
  local t=0 pm f c
  for pm in $(head -qn1 "$CDIR/data/postmaster.pid" "$W1DIR/data/postmaster.pid" "$W2DIR/data/postmaster.pid"); do
    f=$(cut -d')' -f2 "/proc/$pm/stat") || continue
    set -- $f
    t=$((t + ${12} + ${13} + ${14} + ${15}))
    for c in $(pgrep -P "$pm"); do t=$((t + $(backend_ticks "$c"))); done
  done
  echo "$t"
}
declare -A CPUT
pgbc() { # VARIANT SCRIPT
  local out tps n c0 c1 us
  c0=$(cluster_ticks)
  out=$("$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -h "$SOCK" -p "$PORT" -U bench -f "$2" postgres 2>&1)
  sleep 0.2   # the backends of pgbench's connections exit and are reaped
  c1=$(cluster_ticks)
  tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1)
  n=$(printf '%s\n' "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  us=$(awk -v a="$c0" -v b="$c1" -v n="${n:-1}" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b - a) * 1000000 / hz / n}')
  TPS[$1]="${TPS[$1]:-} $tps"
  CPUT[$1]="${CPUT[$1]:-} $us"
  printf '   round %s  %-34s %10.1f tps %8.1f us server CPU per transaction (3 nodes)\n' "$ROUND" "$1" "${tps:-0}" "$us"
}
echo "== citus: point select through the coordinator, $CLIENTS clients, ${SECS}s x $ROUNDS rounds (alternating), 100k rows, 100 tenants, 32 shards"
B="explicit WHERE, no RLS (baseline)"; F="the same, the token forwarded by SET LOCAL"; G="tenantguard context"
for ROUND in $(seq 1 "$ROUNDS"); do
  case $((ROUND % 3)) in
    1) pgbc "$B" "$CDIR/plain.sql"; pgbc "$F" "$CDIR/fwd.sql"; pgbc "$G" "$CDIR/tg.sql" ;;
    2) pgbc "$F" "$CDIR/fwd.sql"; pgbc "$G" "$CDIR/tg.sql"; pgbc "$B" "$CDIR/plain.sql" ;;
    0) pgbc "$G" "$CDIR/tg.sql"; pgbc "$B" "$CDIR/plain.sql"; pgbc "$F" "$CDIR/fwd.sql" ;;
  esac
done
a=$(median ${TPS[$B]}); f=$(median ${TPS[$F]}); b=$(median ${TPS[$G]})
ca=$(median ${CPUT[$B]}); cf=$(median ${CPUT[$F]}); cb=$(median ${CPUT[$G]})
echo
echo "| variant | median tps | ratio | server CPU per transaction, 3 nodes |"
echo "|---|---|---|---|"
echo "| $B | $a | 1.000 | $ca µs |"
echo "| $F (Citus's forwarding alone) | $f | $(ratio "$f" "$a") | $cf µs (+$(awk -v a="$ca" -v b="$cf" 'BEGIN {printf "%.1f", b - a}')) |"
echo "| $G (the query names the tenant) | $b | $(ratio "$b" "$a") | $cb µs (+$(awk -v a="$ca" -v b="$cb" 'BEGIN {printf "%.1f", b - a}')) |"
echo
echo "tenantguard / the same with the token forwarded = $(ratio "$b" "$f")  (tenantguard's own share: +$(awk -v a="$cf" -v b="$cb" 'BEGIN {printf "%.1f", b - a}') us of CPU)"
echo "tenantguard / explicit WHERE = $(ratio "$b" "$a")  (target >= 0.9)"
