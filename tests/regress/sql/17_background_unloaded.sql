-- tenantguard.audit_background without the preloaded library (this
-- cluster has none): the setting is accepted and ignored, status() says
-- why, the transaction chains its own records and the inbox stays empty.
-- The inbox is closed to the application role and refuses UPDATE, DELETE
-- and TRUNCATE to everyone. (With preload: tests/e2e/t_47.)
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"amy","exp":4000000000,"iat":1700000000}') AS acme \gset
ALTER ROLE tg_app SET tenantguard.audit_background = on;
\c - tg_app
SHOW tenantguard.audit_background;
-- Superuser-only: before the library loads this only makes a placeholder,
-- which is refused (a warning) when it loads, at set_context().
SET tenantguard.audit_background = off;
BEGIN;
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.orders (item, amount) VALUES ('bg-unloaded', 1);
COMMIT;
SELECT count(*) FROM tenantguard.audit_inbox;
INSERT INTO tenantguard.audit_inbox (txid, first, key_id) VALUES (1, 0, 'a1');
\c - postgres
SELECT tenantguard.status()->'audit_background' AS audit_background;
SELECT count(*) AS chained_by_the_transaction FROM tenantguard.audit_log
 WHERE tbl = 'app.orders' AND new_values ->> 'item' = 'bg-unloaded';
SELECT count(*) AS waiting FROM tenantguard.audit_inbox;
DELETE FROM tenantguard.audit_inbox;
UPDATE tenantguard.audit_inbox SET first = 1;
TRUNCATE tenantguard.audit_inbox;
SELECT bool_and(ok) AS chains_ok FROM tenantguard.verify_audit();
ALTER ROLE tg_app RESET tenantguard.audit_background;
