#!/usr/bin/env bash
# Issue 2: point select under tenantguard vs explicit WHERE vs plain RLS,
# 1M rows, 1,000 tenants, A/B/C alternating, median of $ROUNDS rounds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
psqlb <<'SQL' >/dev/null
CREATE TABLE bench_plain (id bigint PRIMARY KEY, tenant_id text NOT NULL, payload text NOT NULL);
INSERT INTO bench_plain SELECT g, 't' || ((g - 1) / 1000 + 1), md5(g::text) FROM generate_series(1, 1000000) g;
CREATE INDEX ON bench_plain (tenant_id);
CREATE TABLE bench_rls (LIKE bench_plain INCLUDING ALL);
INSERT INTO bench_rls SELECT * FROM bench_plain;
ALTER TABLE bench_rls ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON bench_rls USING (tenant_id = current_setting('app.tenant_id'));
CREATE TABLE bench_tg (LIKE bench_plain INCLUDING ALL);
INSERT INTO bench_tg SELECT * FROM bench_plain;
SELECT count(*) FROM tenantguard.protect('bench_tg');
CREATE TABLE bench_tokens (tid int PRIMARY KEY, tenant text NOT NULL, token text NOT NULL);
INSERT INTO bench_tokens SELECT i, 't' || i,
  tenantguard.sign_context(jsonb_build_object('tid', 't' || i, 'sub', 'user' || i, 'exp', 4000000000, 'iat', 1700000000))
  FROM generate_series(1, 1000) i;
GRANT SELECT ON bench_plain, bench_rls, bench_tg, bench_tokens TO bench;
VACUUM ANALYZE;
SQL
# Every table and index in shared buffers before the first timed run.
psqlb -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c WHERE c.relname LIKE 'bench_%' AND c.relkind IN ('r', 'i')" >/dev/null
echo "== context: point select per transaction, $CLIENTS clients, ${SECS}s x $ROUNDS rounds, 1M rows, 1,000 tenants"
# Also the server's CPU per transaction (see lib.sh): on a shared VM the
# tps of one 10 s run moves by +-10%, more than the extension costs.
MEASURE_CPU=1
# Each round rotates the order, so no variant always runs first.
rounds "explicit WHERE (baseline)" benches/pgbench/plain_where.sql \
       "tenantguard" benches/pgbench/tenantguard.sql \
       "plain RLS current_setting" benches/pgbench/plain_rls.sql
a=$(median ${TPS["explicit WHERE (baseline)"]}); b=$(median ${TPS["tenantguard"]}); c=$(median ${TPS["plain RLS current_setting"]})
echo
echo "| variant | median tps | ratio |"
echo "|---|---|---|"
echo "| explicit WHERE tenant_id = \$1 (baseline) | $a | 1.000 |"
echo "| plain RLS on current_setting('app.tenant_id') | $c | $(ratio "$c" "$a") |"
echo "| tenantguard (signed token verified per transaction) | $b | $(ratio "$b" "$a") |"
echo
echo "tenantguard / explicit WHERE = $(ratio "$b" "$a")  (target >= 0.95)"
echo "tenantguard / plain RLS      = $(ratio "$b" "$c")  (target >= 1.00)"
ca=$(median ${CPU["explicit WHERE (baseline)"]:-}); cb=$(median ${CPU["tenantguard"]:-}); cc=$(median ${CPU["plain RLS current_setting"]:-})
if [ -n "${CPU["explicit WHERE (baseline)"]:-}" ] && [ -n "${CPU["tenantguard"]:-}" ] && [ -n "${CPU["plain RLS current_setting"]:-}" ]; then
  echo
  echo "server CPU per transaction (medians): explicit WHERE $ca us, plain RLS $cc us, tenantguard $cb us"
  echo "as throughput at equal CPU: tenantguard / explicit WHERE = $(ratio "$ca" "$cb"), tenantguard / plain RLS = $(ratio "$cc" "$cb")"
fi

# One client: the backend is not competing with the others for the two
# cores, so its CPU time per transaction is steadier, and the difference
# between variants is the extension's own cost per transaction.
echo
echo "== context, 1 client: server CPU per transaction, ${SECS}s x $ROUNDS rounds (alternating)"
CLIENTS=1
rounds "1c explicit WHERE" benches/pgbench/plain_where.sql \
       "1c tenantguard" benches/pgbench/tenantguard.sql \
       "1c plain RLS" benches/pgbench/plain_rls.sql
if [ -n "${CPU["1c explicit WHERE"]:-}" ] && [ -n "${CPU["1c tenantguard"]:-}" ] && [ -n "${CPU["1c plain RLS"]:-}" ]; then
  wa=$(median ${CPU["1c explicit WHERE"]}); wb=$(median ${CPU["1c tenantguard"]}); wc=$(median ${CPU["1c plain RLS"]})
  echo "medians: explicit WHERE $wa us, plain RLS $wc us, tenantguard $wb us per transaction"
  echo "tenantguard's own cost: $(awk -v b="$wb" -v a="$wa" 'BEGIN {printf "%+.1f", b - a}') us over explicit WHERE, $(awk -v b="$wb" -v c="$wc" 'BEGIN {printf "%+.1f", b - c}') us over plain RLS"
  echo "as throughput at equal CPU: tenantguard / explicit WHERE = $(ratio "$wa" "$wb"), tenantguard / plain RLS = $(ratio "$wc" "$wb")"
fi
CLIENTS=${BENCH_CLIENTS:-4}
MEASURE_CPU=

# The same policies over a whole tenant's scan: a sequential scan of the 1M
# rows (index scans off) counting one tenant's rows that match a filter.
# The plain RLS policy calls current_setting() for every row; tenantguard's
# policy calls its accessor for every row too, which answers from a cache.
echo
echo "== context: sequential scan of 1M rows under each policy (medians of 3, alternating)"
psql -X -q -At -h "$SOCK" -p "$PORT" -U bench -d bench <<'SQL'
SELECT set_config('tenantguard.context', token, false), set_config('app.tenant_id', tenant, false) FROM bench_tokens WHERE tid = 5 \g /dev/null
SET max_parallel_workers_per_gather = 0; SET enable_indexscan = off; SET enable_bitmapscan = off;
CREATE FUNCTION pg_temp.scan(q text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; x bigint;
BEGIN
  t0 := clock_timestamp(); EXECUTE q INTO x;
  RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END $$;
CREATE TEMP TABLE m (r int, w float8, rls float8, tg float8);
INSERT INTO m SELECT r, pg_temp.scan($q$SELECT count(*) FROM bench_plain WHERE tenant_id = 't5' AND payload LIKE 'a%'$q$),
                        pg_temp.scan($q$SELECT count(*) FROM bench_rls WHERE payload LIKE 'a%'$q$),
                        pg_temp.scan($q$SELECT count(*) FROM bench_tg WHERE payload LIKE 'a%'$q$)
  FROM generate_series(1, 3) r;
SELECT format(E'explicit WHERE %s ms, plain RLS %s ms, tenantguard %s ms\ntenantguard / plain RLS (time) = %s (lower is faster)',
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY w)::numeric, 1),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY rls)::numeric, 1),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY tg)::numeric, 1),
  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY tg) / percentile_cont(0.5) WITHIN GROUP (ORDER BY rls))::numeric, 2)) FROM m;
SQL

# In-server cost of verifying one context: 20,000 distinct tokens, each set
# once with set_config (so no verification cache can answer), against the
# same loop setting a plain GUC. Medians of 5.
echo
echo "== verify cost inside Postgres: set_config of 20,000 distinct tokens (cache misses), minus the same with a plain GUC"
psqlb <<'SQL'
CREATE FUNCTION pg_temp.bench(guc text, col text, reps int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; n int := 0; r record;
BEGIN
  t0 := clock_timestamp();
  FOR i IN 1..reps LOOP
    FOR r IN EXECUTE format('SELECT %I AS v FROM bench_tokens_many', col) LOOP
      PERFORM set_config(guc, r.v, true); n := n + 1;
    END LOOP;
  END LOOP;
  RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
END $$;
CREATE TEMP TABLE bench_tokens_many AS
  SELECT i, tenantguard.sign_context(jsonb_build_object('tid', 't' || (i % 1000 + 1), 'sub', 'user' || i,
                                                        'exp', 4000000000, 'iat', 1700000000)) AS token
  FROM generate_series(1, 20000) i;
WITH runs AS (
  SELECT g, pg_temp.bench('tenantguard.context', 'token', 1) AS tg, pg_temp.bench('app.tenant_id', 'token', 1) AS plain
  FROM generate_series(1, 5) g)
SELECT format('median per set_config: tenantguard %s us, plain GUC %s us => verification ~%s us per context (target < 5 us)',
   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY tg)::numeric, 2),
   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY plain)::numeric, 2),
   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY tg) - percentile_cont(0.5) WITHIN GROUP (ORDER BY plain))::numeric, 2))
FROM runs;
SQL
