\set t random(1, 100)
\set k random(1, 10000)
BEGIN;
SELECT set_config('tenantguard.context', token, true) IS NOT NULL FROM bench_tokens WHERE tid = :t;
INSERT INTO a_tg (payload) VALUES (md5(:k::text));
UPDATE a_tg SET payload = md5(random()::text) WHERE id = (:t - 1) * 100 + :k % 100 + 1;
COMMIT;
