-- Guarded schemas refuse unscoped tables, protect scoped ones in the same
-- transaction, and stop non-superusers from weakening RLS.
\set VERBOSITY terse
CREATE SCHEMA guarded;
CREATE ROLE guard_owner LOGIN;
CREATE SCHEMA unguarded;
GRANT USAGE, CREATE ON SCHEMA guarded, unguarded TO guard_owner, tg_app;
\c - tg_app
SELECT tenantguard.guard_schema('guarded');
\c - postgres
SELECT tenantguard.guard_schema('guarded');
\c - tg_app
-- Unscoped: refused, with an explanation.
CREATE TABLE guarded.notes (id int, body text);
-- Scoped: protected automatically, in the same transaction.
BEGIN;
CREATE TABLE guarded.tasks (id int PRIMARY KEY, tenant_id text NOT NULL, title text);
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'guarded.tasks'::regclass;
SELECT polname FROM pg_policy WHERE polrelid = 'guarded.tasks'::regclass ORDER BY 1;
COMMIT;
-- Legitimately shared: with a reason.
BEGIN;
SET LOCAL tenantguard.shared_reason = 'currency codes';
CREATE TABLE guarded.currencies (code text PRIMARY KEY);
COMMIT;
SELECT relid, reason FROM tenantguard.shared_table WHERE relid = 'guarded.currencies'::regclass;
-- guard_new_table() is PUBLIC (the event trigger runs as the DDL's author)
-- but acts only on a table the calling transaction just created: the
-- application role cannot use it to mark a protected table shared.
SELECT tenantguard.guard_new_table('guarded.tasks'::regclass, 'no_such_column', 'mine now');
SELECT tenantguard.guard_new_table('guarded.currencies'::regclass, 'tenant_id', NULL);
SELECT tenantguard.guard_new_table(0, 'tenant_id', 'x');
SELECT tenantguard.guard_new_table('tenantguard.revocation'::regclass, 'tenant', 'x');
\c - postgres
ALTER EVENT TRIGGER tenantguard_guard_ddl DISABLE;
CREATE TABLE guarded.legacy (id int, tenant_id text);
ALTER EVENT TRIGGER tenantguard_guard_ddl ENABLE;
GRANT SELECT ON guarded.legacy TO tg_app;
\c - tg_app
SELECT tenantguard.guard_new_table('guarded.legacy'::regclass, 'no_such_column', 'mine now');
SELECT count(*) AS legacy_in_catalog FROM tenantguard.shared_table WHERE relid = 'guarded.legacy'::regclass;
CREATE VIEW guarded.v AS SELECT 1 AS one;
SELECT tenantguard.guard_new_table('guarded.v'::regclass, 'tenant_id', 'x');
DROP VIEW guarded.v;
\c - postgres
DROP TABLE guarded.legacy;
\c - tg_app
SELECT (SELECT count(*) FROM tenantguard.shared_table WHERE relid = 'guarded.tasks'::regclass) AS tasks_shared,
       (SELECT count(*) FROM tenantguard.protected_table WHERE relid = 'guarded.tasks'::regclass) AS tasks_protected;
-- The owner (not a superuser) may not weaken the protection.
ALTER TABLE guarded.tasks NO FORCE ROW LEVEL SECURITY;
ALTER TABLE guarded.tasks DISABLE ROW LEVEL SECURITY;
DROP POLICY tenantguard_select ON guarded.tasks;
\c - guard_owner
CREATE TABLE guarded.owned (id int PRIMARY KEY, tenant_id text NOT NULL);
ALTER TABLE guarded.owned NO FORCE ROW LEVEL SECURITY;
DROP POLICY tenantguard_delete ON guarded.owned;
CREATE TABLE guarded.owned_notes (id int);
-- Every generated policy, and every way to weaken one, as the non-superuser
-- owner: each is refused, on every version (PG 16.2 gives no schema_name
-- for a dropped policy; the guard identifies it by its table).
DROP POLICY tenantguard_select ON guarded.owned;
DROP POLICY tenantguard_insert ON guarded.owned;
DROP POLICY tenantguard_update ON guarded.owned;
DROP POLICY tenantguard_delete ON guarded.owned;
DROP POLICY tenantguard_bypass ON guarded.owned;
DROP POLICY IF EXISTS tenantguard_select ON guarded.owned;
ALTER POLICY tenantguard_select ON guarded.owned USING (true);
ALTER POLICY tenantguard_insert ON guarded.owned WITH CHECK (true);
ALTER POLICY tenantguard_bypass ON guarded.owned TO PUBLIC;
ALTER POLICY tenantguard_select ON guarded.owned RENAME TO mine;
CREATE POLICY everyone ON guarded.owned USING (true);
CREATE POLICY everyone_ins ON guarded.owned FOR INSERT WITH CHECK (true);
ALTER TABLE guarded.owned DISABLE ROW LEVEL SECURITY;
ALTER TABLE guarded.owned NO FORCE ROW LEVEL SECURITY;
-- Narrowing is allowed: a restrictive policy of the owner's own.
CREATE POLICY positive_ids ON guarded.owned AS RESTRICTIVE USING (id > 0);
DROP POLICY positive_ids ON guarded.owned;
-- Afterwards, the policies and RLS are as protect() made them.
SELECT polname, polpermissive, polroles::regrole[]::text[] AS roles, pg_get_expr(polqual, polrelid) AS using_expr,
       pg_get_expr(polwithcheck, polrelid) AS check_expr
  FROM pg_policy WHERE polrelid = 'guarded.owned'::regclass ORDER BY 1;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'guarded.owned'::regclass;
-- Partitions: made PARTITION OF a protected table, protected at once;
-- attached later, protected when attached; attached from outside the
-- guarded schema, refused (it could not be guarded).
\c - postgres
CREATE TABLE guarded.parted (id int, tenant_id text NOT NULL) PARTITION BY LIST (tenant_id);
CREATE TABLE guarded.parted_a PARTITION OF guarded.parted FOR VALUES IN ('acme');
ALTER EVENT TRIGGER tenantguard_guard_ddl DISABLE;
CREATE TABLE guarded.parted_b (id int, tenant_id text NOT NULL);
ALTER EVENT TRIGGER tenantguard_guard_ddl ENABLE;
SELECT relid::text, tenant_column FROM tenantguard.protected_table WHERE relid::text LIKE 'guarded.parted%' ORDER BY 1;
ALTER TABLE guarded.parted ATTACH PARTITION guarded.parted_b FOR VALUES IN ('globex');
CREATE TABLE unguarded.parted_c (id int, tenant_id text NOT NULL);
ALTER TABLE guarded.parted ATTACH PARTITION unguarded.parted_c FOR VALUES IN ('initech');
SELECT relid::text, tenant_column FROM tenantguard.protected_table WHERE relid::text LIKE '%parted%' ORDER BY 1;
SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname LIKE 'parted%' ORDER BY 1;
DROP TABLE guarded.parted, unguarded.parted_c;
\c - guard_owner
-- Tables outside guarded schemas are not affected.
CREATE TABLE unguarded.free_for_all (id int);
DROP TABLE unguarded.free_for_all;
-- A superuser may (reviewed change), and unguard_schema lifts the guard.
\c - postgres
ALTER TABLE guarded.owned NO FORCE ROW LEVEL SECURITY;
ALTER TABLE guarded.owned FORCE ROW LEVEL SECURITY;
SELECT tenantguard.unguard_schema('guarded');
\c - tg_app
CREATE TABLE guarded.notes (id int, body text);
DROP TABLE guarded.notes;
