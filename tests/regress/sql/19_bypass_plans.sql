-- Members of tenantguard_bypass outside a bypass. The tenant policies and
-- the bypass policy are both permissive for a member, so Postgres ORs them
-- and the member's ordinary query cannot use the tenant index. The role
-- split that avoids it: a member that does not inherit the role's
-- privileges (NOINHERIT, or on PG 16+ GRANT ... WITH INHERIT FALSE) gets
-- the application role's plan, and SETs ROLE tenantguard_bypass for a
-- bypass. (Plans are reduced to "index" / "seq scan": their wording
-- differs by version.)
\set VERBOSITY terse
CREATE TABLE app.bigev (id int, tenant_id text NOT NULL);
SELECT count(*) > 0 AS protected FROM tenantguard.protect('app.bigev');
INSERT INTO app.bigev SELECT g, 't' || (g % 200) FROM generate_series(1, 50000) g;
ANALYZE app.bigev;
CREATE ROLE tg_maint_noinherit LOGIN NOINHERIT IN ROLE tenantguard_bypass;
GRANT USAGE ON SCHEMA app TO tg_maint_noinherit, tenantguard_bypass;
GRANT SELECT ON app.bigev TO tg_app, tg_maint, tg_maint_noinherit, tenantguard_bypass;
CREATE FUNCTION public.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE l text; r text := '';
BEGIN
  FOR l IN EXECUTE format('EXPLAIN (COSTS OFF) %s', q) LOOP r := r || l || ' '; END LOOP;
  RETURN CASE WHEN r ~ 'Index' THEN 'index' WHEN r ~ 'Seq Scan' THEN 'seq scan' ELSE r END;
END $$;
SELECT tenantguard.sign_context('{"tid":"t7","sub":"u","exp":4000000000,"iat":1700000000}') AS t7 \gset
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'t7') IS NULL AS ctx;
SELECT public.plan_of('SELECT count(*) FROM app.bigev') AS app_role_plan;
SELECT count(*) AS app_role_rows FROM app.bigev;
COMMIT;
\c - tg_maint
BEGIN;
SELECT tenantguard.set_context(:'t7') IS NULL AS ctx;
SELECT public.plan_of('SELECT count(*) FROM app.bigev') AS inheriting_member_plan;
SELECT count(*) AS inheriting_member_rows FROM app.bigev;
COMMIT;
\c - tg_maint_noinherit
BEGIN;
SELECT tenantguard.set_context(:'t7') IS NULL AS ctx;
SELECT public.plan_of('SELECT count(*) FROM app.bigev') AS noinherit_member_plan;
SELECT count(*) AS noinherit_member_rows FROM app.bigev;
COMMIT;
-- Without SET ROLE it has no privileges of the role: no secret, no bypass.
SELECT tenantguard.bypass_secret() IS NOT NULL;
-- With SET ROLE, the bypass works as for any member, and ends with the transaction.
SET ROLE tenantguard_bypass;
BEGIN;
SELECT count(*) AS bypass_started FROM (SELECT tenantguard.begin_bypass(tenantguard.bypass_secret(), 'nightly roll-up', '1 minute')) b;
SELECT count(*) AS bypass_rows FROM app.bigev;
COMMIT;
SELECT count(*) FROM app.bigev;
RESET ROLE;
\c - postgres
DROP TABLE app.bigev;
DROP FUNCTION public.plan_of(text);
REVOKE USAGE ON SCHEMA app FROM tg_maint_noinherit, tenantguard_bypass;
DROP ROLE tg_maint_noinherit;
