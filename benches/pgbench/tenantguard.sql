-- tenantguard: a signed token verified per transaction, generated policies.
\set t random(1, 1000)
\set k random(1, 1000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_tg WHERE id = (:t - 1) * 1000 + :k;
COMMIT;
