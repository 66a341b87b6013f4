-- authorize_policy(): the compiled policy form, as a DBA and the application
-- role see it. (11_authz loaded the policy packs and the users bo and bob;
-- tests/e2e/t_70_compiled_policy.sh compares it with authorize() row by row.)
\set VERBOSITY terse
CREATE TABLE claims_c (id int PRIMARY KEY, tenant_id text NOT NULL, submitted_by text,
                       department text NOT NULL, amount numeric, due date);
SELECT count(*) FROM tenantguard.protect('claims_c') \g /dev/null
INSERT INTO claims_c VALUES (1, 'acme', 'eve', 'finance', 10, NULL), (2, 'acme', 'bo', 'finance', 10, NULL),
  (3, 'acme', 'eve', 'sales', 10, NULL), (4, 'acme', 'eve', 'finance', 1000, NULL), (5, 'acme', 'eve', 'finance', 1001, NULL),
  (6, 'acme', NULL, 'finance', NULL, NULL), (7, 'acme', NULL, 'finance', 5, NULL), (8, 'globex', 'eve', 'finance', 10, NULL);
GRANT SELECT ON claims_c TO tg_app;
-- Dry run: the DDL for review (which conditions compile, the spec, the
-- policy); nothing is created.
SELECT tenantguard.authorize_policy('claims_c', 'document:approve', ARRAY['submitted_by', 'department', 'amount'], dry_run => true);
SELECT count(*) AS policies_before FROM pg_policies WHERE tablename = 'claims_c' AND policyname LIKE 'tg_authz%';
-- Refusals: a type the compiled form cannot carry, an unknown column, a
-- command a USING clause cannot serve.
SELECT tenantguard.authorize_policy('claims_c', 'document:approve', ARRAY['due']);
SELECT tenantguard.authorize_policy('claims_c', 'document:approve', ARRAY['nope']);
SELECT tenantguard.authorize_policy('claims_c', 'document:approve', ARRAY['amount'], command => 'INSERT');
-- Not for the application role.
SET ROLE tg_app;
SELECT tenantguard.authorize_policy('claims_c', 'document:approve', ARRAY['amount']);
RESET ROLE;
-- Created: a RESTRICTIVE policy on top of the tenant policies.
SELECT tenantguard.authorize_policy('claims_c', 'document:approve', ARRAY['submitted_by', 'department', 'amount']) IS NOT NULL AS created;
SELECT policyname, permissive, cmd FROM pg_policies WHERE tablename = 'claims_c' ORDER BY policyname;
SELECT action, length(spec_id) AS id_length FROM tenantguard.authz_compiled WHERE action = 'document:approve';
CREATE FUNCTION pg_temp.tok(tid text, sub text) RETURNS text LANGUAGE sql AS
$$ SELECT tenantguard.sign_context(jsonb_build_object('tid', tid, 'sub', sub, 'exp', 4000000000, 'iat', 1700000000)) $$;
SELECT pg_temp.tok('acme', 'bo') AS bo, pg_temp.tok('acme', 'bob') AS bob, pg_temp.tok('acme', 'eve') AS eve \gset
\c - tg_app
-- bo (finance, limit 1000): not his own claim, his department, within his
-- limit; rows with a NULL amount are an error (denied); globex never.
-- The GUC that forces parallel plans is force_parallel_mode before PG 16 and
-- debug_parallel_query from 16 on.
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_guc \gset
BEGIN;
SELECT tenantguard.set_context(:'bo');
SELECT id FROM claims_c ORDER BY id;
-- The same rows from parallel workers, and from a generic plan reused
-- after the context changes.
SET LOCAL :parallel_guc = on;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SELECT array_agg(id ORDER BY id) AS parallel_ids FROM claims_c;
RESET :parallel_guc;
SET LOCAL plan_cache_mode = force_generic_plan;
PREPARE q(int) AS SELECT array_agg(id ORDER BY id) AS ids FROM claims_c WHERE id > $1;
EXECUTE q(0);
SELECT tenantguard.set_context(:'bob');
EXECUTE q(0);
DEALLOCATE q;
COMMIT;
-- bob (sales, 5000) sees the sales claim only; eve holds no approve right.
BEGIN;
SELECT tenantguard.set_context(:'bob');
SELECT id FROM claims_c ORDER BY id;
SELECT tenantguard.set_context(:'eve');
SELECT count(*) AS eve_sees FROM claims_c;
COMMIT;
-- No context: fail closed.
SELECT count(*) FROM claims_c;
\c - postgres
-- The linter: a condition granted after generation (TG016, with the call
-- that regenerates the policy), and a spec row that no longer matches its
-- hash (TG015).
SELECT severity, code, object FROM tenantguard.lint() WHERE code IN ('TG015', 'TG016');
SELECT tenantguard.grant_permission('acme', 'business_user', 'document:approve', 'resource.amount < 5') > 0 AS granted;
SELECT severity, code, object, fix FROM tenantguard.lint() WHERE code IN ('TG015', 'TG016');
SELECT tenantguard.revoke_permission('acme', 'business_user', 'document:approve') > 0 AS revoked;
UPDATE tenantguard.authz_compiled SET spec = spec || ' ' WHERE action = 'document:approve';
SELECT severity, code, object FROM tenantguard.lint() WHERE code IN ('TG015', 'TG016');
DELETE FROM tenantguard.authz_compiled WHERE action = 'document:approve';
DROP TABLE claims_c;
