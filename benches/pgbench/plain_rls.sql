-- Baseline: plain RLS on current_setting('app.tenant_id') (spoofable).
\set t random(1, 1000)
\set k random(1, 1000)
BEGIN;
SELECT set_config('app.tenant_id', tenant, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_rls WHERE id = (:t - 1) * 1000 + :k;
COMMIT;
