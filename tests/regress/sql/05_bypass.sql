-- Bypass needs this backend's secret, a reason, and ends with the transaction
-- or the ttl. Only members of tenantguard_bypass ever see the bypass policy.
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}') AS acme \gset
\c - tg_app
-- The application role cannot fetch a secret.
SELECT tenantguard.bypass_secret();
-- Guessing fails and bypass stays off.
BEGIN;
SELECT tenantguard.begin_bypass(repeat('0', 64), 'guess');
ROLLBACK;
SELECT tenantguard.bypassing();
\c - tg_maint
SELECT tenantguard.bypass_secret() AS secret \gset
SELECT length(:'secret') AS secret_hex_chars;
-- A forgotten query without context still fails closed for the maintenance role.
SELECT count(*) FROM app.orders;
-- No reason, blank reason, NULL secret, wrong secret, bad ttl: refused.
BEGIN; SELECT tenantguard.begin_bypass(:'secret', ''); ROLLBACK;
BEGIN; SELECT tenantguard.begin_bypass(:'secret', '   '); ROLLBACK;
BEGIN; SELECT tenantguard.begin_bypass(:'secret', NULL); ROLLBACK;
BEGIN; SELECT tenantguard.begin_bypass(NULL, 'migration'); ROLLBACK;
BEGIN; SELECT tenantguard.begin_bypass(upper(:'secret'), 'migration'); ROLLBACK;
BEGIN; SELECT tenantguard.begin_bypass(:'secret', 'migration', '0 seconds'); ROLLBACK;
BEGIN; SELECT tenantguard.begin_bypass(:'secret', 'migration', '2 days'); ROLLBACK;
-- With the secret and a reason: every tenant, for this transaction only.
BEGIN;
SELECT tenantguard.begin_bypass(:'secret', 'billing roll-up INC-42', '5 minutes');
SELECT tenantguard.bypassing();
SELECT tenant_id, count(*) FROM app.orders GROUP BY 1 ORDER BY 1;
SELECT tenantguard.tenant_ids();
COMMIT;
SELECT tenantguard.bypassing();
SELECT count(*) FROM app.orders;
-- A bypass also holds in a parallel scan whose workers alone read the
-- table (a worker cannot see the bypass: it finds no context and an empty
-- scope, and the leader's bypass policy admits the rows).
-- The GUC that forces parallel plans is force_parallel_mode before PG 16 and
-- debug_parallel_query from 16 on.
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_guc \gset
BEGIN;
SELECT tenantguard.begin_bypass(:'secret', 'parallel roll-up', '5 minutes');
SET LOCAL :parallel_guc = on;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL enable_indexscan = off;
SET LOCAL enable_indexonlyscan = off;
SET LOCAL enable_bitmapscan = off;
SET LOCAL parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT tenant_id, count(*) FROM app.orders GROUP BY 1;
SELECT tenant_id, count(*) FROM app.orders GROUP BY 1 ORDER BY 1;
COMMIT;
-- end_bypass ends it inside the transaction.
BEGIN;
SELECT tenantguard.begin_bypass(:'secret', 'support ticket 7');
SELECT tenantguard.end_bypass();
SELECT count(*) FROM app.orders;
ROLLBACK;
-- A bypass started in a rolled-back savepoint does not survive it.
BEGIN;
SAVEPOINT s;
SELECT tenantguard.begin_bypass(:'secret', 'inside savepoint');
ROLLBACK TO s;
SELECT tenantguard.bypassing();
ROLLBACK;
-- The ttl bounds it even inside one transaction.
BEGIN;
SELECT tenantguard.begin_bypass(:'secret', 'short window', '1 second');
SELECT tenantguard.bypassing();
SELECT pg_sleep(1.2);
SELECT tenantguard.bypassing();
SELECT count(*) FROM app.orders;
ROLLBACK;
-- With a context and bypass, the context tenant's rows plus all others.
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT tenantguard.begin_bypass(:'secret', 'cross-tenant report');
SELECT count(DISTINCT tenant_id) > 1 AS sees_other_tenants FROM app.orders;
ROLLBACK;
-- The secret of another backend is refused.
\c - tg_maint
BEGIN;
SELECT tenantguard.begin_bypass(:'secret', 'reused secret');
ROLLBACK;
-- The application role cannot use a maintenance secret either (it has none
-- of its own, and the bypass policy does not apply to it).
SELECT tenantguard.bypass_secret() AS secret2 \gset
\c - tg_app
BEGIN;
SELECT tenantguard.begin_bypass(:'secret2', 'stolen secret');
ROLLBACK;
-- Every bypass and secret fetch is on the security trail.
\c - postgres
SELECT event, db_role, detail->>'reason' AS reason, detail->>'ttl_seconds' AS ttl
  FROM tenantguard.security_log WHERE event LIKE 'bypass%' ORDER BY id;
