-- The context must hold in prepared/generic plans, cursors, triggers,
-- SECURITY DEFINER code and parallel workers.
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}') AS acme \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000}') AS globex \gset
-- A SECURITY DEFINER function owned by the table owner (FORCE RLS applies to owners too).
CREATE FUNCTION app.count_orders() RETURNS bigint LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$ SELECT count(*) FROM app.orders $$;
ALTER FUNCTION app.count_orders() OWNER TO tg_owner;
GRANT EXECUTE ON FUNCTION app.count_orders() TO tg_app;
-- A token that expires in a few seconds (for the cursor below).
SELECT ceil(extract(epoch FROM clock_timestamp()))::bigint + 3 AS brief_exp \gset
SELECT tenantguard.sign_context(jsonb_build_object('tid', 'acme', 'sub', 'alice', 'iat', 1700000000,
         'exp', :brief_exp)) AS brief \gset
\c - tg_app
-- Prepared statement, forced generic plan, reused across tenants.
SET plan_cache_mode = force_generic_plan;
PREPARE q AS SELECT string_agg(item, ',' ORDER BY id) FROM app.orders WHERE amount >= $1;
BEGIN; SELECT tenantguard.set_context(:'acme'); EXECUTE q(0); COMMIT;
BEGIN; SELECT tenantguard.set_context(:'globex'); EXECUTE q(0); COMMIT;
BEGIN; SELECT tenantguard.set_context(:'acme'); EXECUTE q(0); COMMIT;
EXECUTE q(0);
RESET plan_cache_mode;
-- Custom plans after many executions, then a tenant switch.
PREPARE q2 AS SELECT count(*) FROM app.orders WHERE tenant_id = $1;
BEGIN; SELECT tenantguard.set_context(:'acme');
EXECUTE q2('acme'); EXECUTE q2('acme'); EXECUTE q2('acme'); EXECUTE q2('acme'); EXECUTE q2('acme'); EXECUTE q2('acme');
EXECUTE q2('globex');
COMMIT;
-- Cursors: a cursor keeps the context it first read under (the policy's
-- accessors answer once per query execution), so setting another context
-- before the next FETCH does not switch its tenant.
BEGIN;
SELECT tenantguard.set_context(:'acme');
DECLARE c CURSOR FOR SELECT tenant_id, item FROM app.orders ORDER BY id;
FETCH 1 FROM c;
SELECT tenantguard.set_context(:'globex');
FETCH ALL FROM c;
DECLARE c2 CURSOR FOR SELECT tenant_id, item FROM app.orders ORDER BY id;
FETCH ALL FROM c2;
COMMIT;
-- A cursor opened without context fails closed (at DECLARE: planning
-- already asks the policy's accessor).
BEGIN;
DECLARE c3 CURSOR FOR SELECT * FROM app.orders;
FETCH 1 FROM c3;
ROLLBACK;
-- A cursor whose token expires while it is open: the next FETCH that reads
-- through the policy's filter fails (checked against each statement's
-- start). An index scan evaluates the policy once, as its key, when it
-- starts, as a query already running does; so this scan filters.
BEGIN;
SELECT tenantguard.set_context(:'brief');
SET LOCAL enable_indexscan = off;
SET LOCAL enable_bitmapscan = off;
DECLARE c4 CURSOR FOR SELECT tenant_id, item FROM app.orders WHERE amount >= 0;
FETCH 1 FROM c4;
SELECT pg_sleep_until(to_timestamp(:brief_exp) + interval '50 ms');
FETCH 1 FROM c4;
ROLLBACK;
-- One PL/pgSQL function switching contexts between its statements: each
-- statement reads under the context set before it, also in a loop that
-- reuses the same cached plan and expression.
CREATE FUNCTION pg_temp.per_tenant(toks text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text := ''; t text; n bigint;
BEGIN
  FOREACH t IN ARRAY toks LOOP
    PERFORM tenantguard.set_context(t);
    SELECT count(*) INTO n FROM app.orders;
    out := out || tenantguard.tenant_id() || '=' || n || ' ';
  END LOOP;
  RETURN out;
END $$;
BEGIN;
SELECT pg_temp.per_tenant(ARRAY[:'acme', :'globex', :'acme', :'globex']);
ROLLBACK;
-- Triggers see the same context.
BEGIN;
SELECT tenantguard.set_context(:'globex');
INSERT INTO app.orders (item) VALUES ('sprocket');
SELECT tenant_id, seen_tenant FROM app.order_log;
ROLLBACK;
-- SECURITY DEFINER code is still scoped.
BEGIN; SELECT tenantguard.set_context(:'acme'); SELECT app.count_orders(); COMMIT;
BEGIN; SELECT tenantguard.set_context(:'globex'); SELECT app.count_orders(); COMMIT;
SELECT app.count_orders();
-- Parallel workers see the same rows.
-- The GUC that forces parallel plans is force_parallel_mode before PG 16 and
-- debug_parallel_query from 16 on.
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_guc \gset
SET :parallel_guc = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
BEGIN;
SELECT tenantguard.set_context(:'acme');
EXPLAIN (COSTS OFF) SELECT tenant_id, count(*) FROM app.orders GROUP BY 1;
SELECT tenant_id, count(*) FROM app.orders GROUP BY 1;
-- An accessor evaluated inside the worker itself.
EXPLAIN (COSTS OFF) SELECT count(*) FROM app.orders WHERE tenant_id = tenantguard.tenant_id();
SELECT count(*) FROM app.orders WHERE tenant_id = tenantguard.tenant_id();
-- Forced into the workers alone (no index paths, leader not scanning): each
-- worker loads the library, reads the keys from the configuration (the
-- leader only sends their hidden placeholder) and verifies the token.
SET LOCAL enable_indexscan = off;
SET LOCAL enable_indexonlyscan = off;
SET LOCAL enable_bitmapscan = off;
SET LOCAL parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT tenant_id, count(*) FROM app.orders WHERE tenant_id = tenantguard.tenant_id() GROUP BY 1;
SELECT tenant_id, count(*) FROM app.orders WHERE tenant_id = tenantguard.tenant_id() GROUP BY 1;
COMMIT;
SELECT count(*) FROM app.orders;
-- Without a context, a plan whose workers alone scan (a generic plan,
-- planned earlier under a context) fails in the workers with the same
-- error: it does not read an empty table.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SET parallel_leader_participation = off;
SET plan_cache_mode = force_generic_plan;
PREPARE workers_only AS SELECT count(*) FROM app.orders;
BEGIN; SELECT tenantguard.set_context(:'acme'); EXPLAIN (COSTS OFF) EXECUTE workers_only; EXECUTE workers_only; COMMIT;
EXECUTE workers_only;
-- The worker's hint that its leader is bypassing is set by begin_bypass() only.
SET tenantguard.leader_bypass_until = '999999999999999999';
SELECT set_config('tenantguard.leader_bypass_until', '999999999999999999', true);
EXECUTE workers_only;
DEALLOCATE workers_only;
RESET plan_cache_mode;
RESET parallel_leader_participation;
RESET enable_bitmapscan;
RESET enable_indexscan;
RESET :parallel_guc;
