-- Grants and partitions that reach around row-level security.
--
-- TRUNCATE ignores row-level security: one statement of a role that holds
-- it empties every tenant. protect() takes it from PUBLIC and warns about
-- other grantees; lint() TG017 reports TRUNCATE, TRIGGER and REFERENCES
-- grants on protected tables to anyone but the owner, with a REVOKE that
-- clears the finding. Attacked as the application role.
\set VERBOSITY terse
CREATE SCHEMA grantfx;
GRANT USAGE ON SCHEMA grantfx TO tg_app;
CREATE TABLE grantfx.ledger (id int PRIMARY KEY, tenant_id text NOT NULL);
INSERT INTO grantfx.ledger VALUES (1, 'acme'), (2, 'globex');
GRANT SELECT, INSERT ON grantfx.ledger TO tg_app;
GRANT TRUNCATE, TRIGGER ON grantfx.ledger TO PUBLIC;
GRANT TRUNCATE, REFERENCES ON grantfx.ledger TO tg_app;
-- protect(): the REVOKE from PUBLIC is part of the plan; tg_app is reported.
SELECT * FROM tenantguard.protect('grantfx.ledger', dry_run => true) WHERE starts_with(protect, 'REVOKE');
SELECT count(*) > 0 AS applied FROM tenantguard.protect('grantfx.ledger');
SELECT count(*) AS second_run FROM tenantguard.protect('grantfx.ledger');
SELECT code, object, fix FROM tenantguard.lint('grantfx') WHERE code = 'TG017' ORDER BY object;
-- The hole, as the application role: TRUNCATE empties every tenant.
\c - tg_app
BEGIN;
TRUNCATE grantfx.ledger;
ROLLBACK;
-- The printed fixes close it, and clear the findings.
\c - postgres
DO $$ DECLARE f text; BEGIN
  FOR f IN SELECT fix FROM tenantguard.lint('grantfx') WHERE code = 'TG017' LOOP EXECUTE f; END LOOP;
END $$;
SELECT count(*) AS tg017_after_fixes FROM tenantguard.lint('grantfx') WHERE code = 'TG017';
\c - tg_app
TRUNCATE grantfx.ledger;
\c - postgres
SELECT count(*) AS rows_kept FROM grantfx.ledger;
-- A partition attached after protect(), with RLS off and granted to the
-- application role directly: through it, every tenant's rows.
SELECT tenantguard.sign_context('{"tid":"acme","sub":"u","exp":4000000000,"iat":1700000000}') AS acme \gset
CREATE TABLE grantfx.events (id int, tenant_id text NOT NULL) PARTITION BY LIST (tenant_id);
SELECT count(*) > 0 AS protected FROM tenantguard.protect('grantfx.events');
CREATE TABLE grantfx.events_rest (id int, tenant_id text NOT NULL);
INSERT INTO grantfx.events_rest VALUES (1, 'acme'), (2, 'globex');
ALTER TABLE grantfx.events ATTACH PARTITION grantfx.events_rest DEFAULT;
GRANT SELECT ON grantfx.events_rest TO tg_app;
\c - tg_app
SELECT count(*) AS every_tenant FROM grantfx.events_rest;
\c - postgres
SELECT code, object, fix FROM tenantguard.lint('grantfx') WHERE code = 'TG018';
DO $$ DECLARE f text; BEGIN
  FOR f IN SELECT fix FROM tenantguard.lint('grantfx') WHERE code = 'TG018' LOOP EXECUTE f; END LOOP;
END $$;
SELECT count(*) AS tg018_after_fixes FROM tenantguard.lint('grantfx') WHERE code = 'TG018';
\c - tg_app
SELECT count(*) FROM grantfx.events_rest;
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT count(*) AS own_rows FROM grantfx.events_rest;
COMMIT;
-- A materialized view over a protected table holds every tenant's rows and
-- has no row-level security; TG009's fix takes it from the roles it was
-- granted to.
\c - postgres
CREATE MATERIALIZED VIEW grantfx.ledger_mv AS SELECT * FROM grantfx.ledger;
GRANT SELECT ON grantfx.ledger_mv TO tg_app;
\c - tg_app
SELECT count(*) AS every_tenant_through_the_mv FROM grantfx.ledger_mv;
\c - postgres
SELECT code, object, detail, fix FROM tenantguard.lint('grantfx') WHERE code = 'TG009';
DO $$ DECLARE f text; BEGIN
  FOR f IN SELECT fix FROM tenantguard.lint('grantfx') WHERE code = 'TG009' LOOP EXECUTE f; END LOOP;
END $$;
SELECT count(*) AS tg009_after_fixes FROM tenantguard.lint('grantfx') WHERE code = 'TG009';
\c - tg_app
SELECT count(*) FROM grantfx.ledger_mv;
\c - postgres
DROP SCHEMA grantfx CASCADE;
