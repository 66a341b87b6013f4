-- protect() with hostile identifiers: quoted, mixed-case, spaced, and names
-- that look like SQL injection. Every identifier goes through Postgres's
-- own quoting; the DDL does what it says and nothing else.
SET client_min_messages = warning;
CREATE SCHEMA "Tenant Data";
CREATE TABLE "Tenant Data"."Order Lines" ("Tenant ID" text NOT NULL, "Line" int);
CREATE TABLE "Tenant Data"."x'); DROP TABLE app.orders; --" (tenant_id text NOT NULL);
CREATE TABLE "Tenant Data"."we""ird" ("we""ird col" text NOT NULL);
RESET client_min_messages;
SELECT * FROM tenantguard.protect('"Tenant Data"."Order Lines"', 'Tenant ID', dry_run => true);
SELECT count(*) AS applied FROM tenantguard.protect('"Tenant Data"."Order Lines"', 'Tenant ID');
SELECT count(*) AS applied_again FROM tenantguard.protect('"Tenant Data"."Order Lines"', 'Tenant ID');
SELECT * FROM tenantguard.protect('"Tenant Data"."x''); DROP TABLE app.orders; --"', dry_run => true);
SELECT count(*) AS applied FROM tenantguard.protect('"Tenant Data"."x''); DROP TABLE app.orders; --"');
SELECT count(*) AS applied FROM tenantguard.protect('"Tenant Data"."we""ird"', 'we"ird col');
-- app.orders is still there, and the odd tables are protected.
SELECT to_regclass('app.orders') IS NOT NULL AS orders_intact;
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, count(p.polname) AS policies
  FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid
 WHERE c.relnamespace = '"Tenant Data"'::regnamespace AND c.relkind = 'r'
 GROUP BY 1, 2, 3 ORDER BY 1;
-- A tenant column name that is not a column is reported, not guessed.
SELECT tenantguard.protect('"Tenant Data"."Order Lines"', 'tenant_id; DROP TABLE app.orders');
-- And the policies work on the odd table, as the app role.
GRANT USAGE ON SCHEMA "Tenant Data" TO tg_app;
GRANT SELECT, INSERT ON "Tenant Data"."Order Lines" TO tg_app;
SELECT tenantguard.sign_context('{"tid":"acme","sub":"amy","exp":4000000000,"iat":1700000000}') AS acme \gset
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'acme') \g /dev/null
INSERT INTO "Tenant Data"."Order Lines" ("Line") VALUES (1) RETURNING *;
INSERT INTO "Tenant Data"."Order Lines" ("Tenant ID", "Line") VALUES ('globex', 2);
ROLLBACK;
