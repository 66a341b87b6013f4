-- Baseline: unprotected table, explicit WHERE tenant_id = $1. Same round
-- trips as the tenantguard script: set a (here unused) GUC per transaction.
\set t random(1, 1000)
\set k random(1, 1000)
BEGIN;
SELECT set_config('app.tenant_id', tenant, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_plain WHERE tenant_id = 't' || :t AND id = (:t - 1) * 1000 + :k;
COMMIT;
