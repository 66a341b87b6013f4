-- Staff tokens work only inside a live support access window.
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"staff-joe","staff":true,"exp":4000000000,"iat":1700000000}') AS joe_acme \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"staff-joe","staff":true,"exp":4000000000,"iat":1700000000}') AS joe_globex \gset
\c - tg_app
-- No grant: refused. The application role cannot grant one.
SELECT tenantguard.set_context(:'joe_acme');
SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'ticket 1', now() + interval '1 hour');
\c - tg_ops
SELECT tenantguard.grant_support_access('acme', 'staff-joe', '', now() + interval '1 hour');
SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'ticket 1', now() - interval '1 hour');
SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'ticket 1', now() + interval '1 hour') > 0 AS granted;
\c - tg_app
BEGIN; SELECT tenantguard.set_context(:'joe_acme'); SELECT count(*) FROM app.orders; COMMIT;
-- The grant is for acme only.
SELECT tenantguard.set_context(:'joe_globex');
-- Revoked: the open session loses access on its next statement.
SELECT tenantguard.set_context(:'joe_acme', false);
SELECT count(*) FROM app.orders;
\c - tg_ops
SELECT tenantguard.revoke_support_access('acme', 'staff-joe');
\c - tg_app
SELECT tenantguard.set_context(:'joe_acme');
-- An expiring grant ends on time.
\c - tg_ops
SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'ticket 2', clock_timestamp() + interval '3 seconds') > 0 AS granted;
\c - tg_app
SELECT tenantguard.set_context(:'joe_acme', false);
SELECT count(*) FROM app.orders;
SELECT pg_sleep(3.5);
SELECT count(*) FROM app.orders;
\c - postgres
SELECT event, tenant, detail->>'staff_user' AS staff_user, detail->>'reason' AS reason
  FROM tenantguard.security_log WHERE event LIKE 'support%' ORDER BY id;
