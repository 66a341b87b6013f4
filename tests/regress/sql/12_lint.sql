-- lint(): one fixture with each hole and a clean twin without it. Each code
-- must report the holed object and never the clean one.
SET client_min_messages = warning;
CREATE SCHEMA lintfx;
CREATE ROLE lint_login_owner LOGIN;
CREATE ROLE lint_nologin_owner NOLOGIN;
-- TG008: a login role with BYPASSRLS  | clean: the same without LOGIN
CREATE ROLE lint_bypasser LOGIN BYPASSRLS;
CREATE ROLE lint_bypasser_nologin NOLOGIN BYPASSRLS;
-- TG001: tenant column, no RLS  | clean: protected
CREATE TABLE lintfx.tg001_hole (id int PRIMARY KEY, tenant_id text);
CREATE TABLE lintfx.tg001_clean (id int PRIMARY KEY, tenant_id text);
SELECT count(*) FROM tenantguard.protect('lintfx.tg001_clean') \g /dev/null
-- TG002: RLS not forced  | TG003: RLS and no policy
CREATE TABLE lintfx.tg002_hole (id int PRIMARY KEY, tenant_id text);
ALTER TABLE lintfx.tg002_hole ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON lintfx.tg002_hole USING (tenant_id = (SELECT tenantguard.tenant_id()));
CREATE TABLE lintfx.tg003_hole (id int PRIMARY KEY, tenant_id text);
ALTER TABLE lintfx.tg003_hole ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
-- TG004: always-true policy  | TG005: current_setting policy  | TG006: extra permissive
CREATE TABLE lintfx.tg004_hole (id int PRIMARY KEY, tenant_id text);
SELECT count(*) FROM tenantguard.protect('lintfx.tg004_hole') \g /dev/null
CREATE POLICY open_all ON lintfx.tg004_hole FOR SELECT USING (true);
CREATE TABLE lintfx.tg005_hole (id int PRIMARY KEY, tenant_id text);
ALTER TABLE lintfx.tg005_hole ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY spoofable ON lintfx.tg005_hole USING (tenant_id = current_setting('app.tenant_id'));
SELECT tenantguard.mark_shared('lintfx.tg005_hole', 'fixture: only TG005 should fire');
CREATE TABLE lintfx.tg006_clean_restrictive (id int PRIMARY KEY, tenant_id text);
SELECT count(*) FROM tenantguard.protect('lintfx.tg006_clean_restrictive') \g /dev/null
CREATE POLICY narrower ON lintfx.tg006_clean_restrictive AS RESTRICTIVE USING (id > 0);
-- TG007: a login role owns a protected table  | clean: NOLOGIN owner (tg001_clean)
CREATE TABLE lintfx.tg007_hole (id int PRIMARY KEY, tenant_id text);
SELECT count(*) FROM tenantguard.protect('lintfx.tg007_hole') \g /dev/null
ALTER TABLE lintfx.tg007_hole OWNER TO lint_login_owner;
ALTER TABLE lintfx.tg001_clean OWNER TO lint_nologin_owner;
-- TG009: view without security_invoker  | clean: with it
CREATE VIEW lintfx.tg009_hole AS SELECT * FROM lintfx.tg001_clean;
CREATE VIEW lintfx.tg009_clean WITH (security_invoker = on) AS SELECT * FROM lintfx.tg001_clean;
-- TG010: SECURITY DEFINER reading a protected table  | TG011: no pinned search_path
CREATE FUNCTION lintfx.tg010_hole() RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT count(*) FROM lintfx.tg001_clean $$;
CREATE FUNCTION lintfx.tg011_hole() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$;
CREATE FUNCTION lintfx.tg011_clean() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT 1 $$;
-- TG012: FK without the tenant column  | clean: composite FK with it
CREATE TABLE lintfx.parent (id int, tenant_id text, PRIMARY KEY (id), UNIQUE (tenant_id, id));
CREATE TABLE lintfx.tg012_hole (id int PRIMARY KEY, tenant_id text, parent_id int REFERENCES lintfx.parent (id));
CREATE TABLE lintfx.tg012_clean (id int PRIMARY KEY, tenant_id text, parent_id int,
    FOREIGN KEY (tenant_id, parent_id) REFERENCES lintfx.parent (tenant_id, id));
-- TG013: protected table whose tenant index was dropped
CREATE TABLE lintfx.tg013_hole (id int PRIMARY KEY, tenant_id text);
SELECT count(*) FROM tenantguard.protect('lintfx.tg013_hole') \g /dev/null
DROP INDEX lintfx.tg013_hole_tenant_id_idx;
-- TG014: neither protected nor shared  | clean: shared
CREATE TABLE lintfx.tg014_hole (code text PRIMARY KEY);
CREATE TABLE lintfx.tg014_clean (code text PRIMARY KEY);
SELECT tenantguard.mark_shared('lintfx.tg014_clean', 'ISO country codes');
RESET client_min_messages;
-- protect_schema (dry run) skips shared tables and reports tables without the column:
SELECT tenantguard.protect_schema('lintfx', dry_run => true);
-- The findings, by code.
SELECT code, severity, object FROM tenantguard.lint('lintfx') ORDER BY code, object;
-- Every fix is runnable SQL naming the object.
SELECT code, fix FROM tenantguard.lint('lintfx') WHERE code IN ('TG001', 'TG002', 'TG009', 'TG011', 'TG013') ORDER BY code, object;
-- Applying the fixes clears those findings.
ALTER TABLE lintfx.tg002_hole FORCE ROW LEVEL SECURITY;
ALTER VIEW lintfx.tg009_hole SET (security_invoker = on);
CREATE INDEX ON lintfx.tg013_hole (tenant_id);
SELECT code, object FROM tenantguard.lint('lintfx') WHERE code IN ('TG002', 'TG009', 'TG013');
-- Every printed fix runs, and running them one by one (each against a
-- fresh lint()) clears every finding, but for the templates: TG007 (the
-- owner role is yours to name) and TG012 (the composite key to recreate),
-- and TG008 (a role, cluster-wide).
DO $$ DECLARE r record; n int := 0; BEGIN
  LOOP
    SELECT code, object, fix INTO r FROM tenantguard.lint('lintfx')
     WHERE code NOT IN ('TG007', 'TG008', 'TG012') ORDER BY code, object LIMIT 1;
    EXIT WHEN NOT FOUND OR n > 40;
    EXECUTE r.fix;
    n := n + 1;
  END LOOP;
  RAISE NOTICE 'fixes applied: %', n;
END $$;
SELECT code, object FROM tenantguard.lint('lintfx') WHERE code <> 'TG008' ORDER BY code, object;
-- TG008 (roles) is cluster-wide: reported by every run that looks at a protected table, and when no schema is given.
SELECT object FROM tenantguard.lint() WHERE code = 'TG008' AND object LIKE '%lint%';
-- The application role can run the linter (it reads catalogs only).
\c - tg_app
SELECT count(*) > 0 AS app_can_lint FROM tenantguard.lint('lintfx');
-- lint() over the extension's own schema: what it opens to PUBLIC, each
-- with why (info), and no hole: no always-true policy for anyone but the
-- owner, no SECURITY DEFINER function without a pinned search_path.
\c - postgres
SELECT severity, code, object FROM tenantguard.lint('tenantguard') ORDER BY code, object;
