-- tenantguard: a signed token verified per transaction (set_context, the
-- documented call), generated policies.
\set t random(1, 1000)
\set k random(1, 1000)
BEGIN;
SELECT tenantguard.set_context(token) FROM bench_tokens WHERE tid = :t;
SELECT payload FROM bench_tg WHERE id = (:t - 1) * 1000 + :k;
COMMIT;
