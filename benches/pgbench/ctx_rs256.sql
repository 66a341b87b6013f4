-- Point select with an RS256 context (a trusted issuer's tokens) (tokens reused across transactions).
\set t random(1, 100)
\set k random(1, 1000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens_rs WHERE tid = :t;
SELECT payload FROM bench_tg WHERE id = (:t - 1) * 1000 + :k;
COMMIT;
