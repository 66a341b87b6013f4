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
DROP SCHEMA grantfx CASCADE;
