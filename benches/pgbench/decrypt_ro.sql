-- A read-only transaction that decrypts one value (0.2.0: no XID assigned).
\set k random(1, 1000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens WHERE tid = 1;
SELECT tenantguard.decrypt_text(v, 'bench.' || id) FROM bench_secret WHERE id = :k;
COMMIT;
