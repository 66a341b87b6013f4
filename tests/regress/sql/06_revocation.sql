-- Revocation cuts access on the next statement, not at token expiry.
-- (The two-connection races are in tests/isolation.)
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000,"jti":"s-1"}') AS alice \gset
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000,"jti":"s-2"}') AS alice2 \gset
SELECT tenantguard.sign_context('{"tid":"acme","sub":"carol","exp":4000000000,"iat":1700000000,"jti":"s-3"}') AS carol \gset
SELECT tenantguard.sign_context('{"tid":"acme","sub":"dave","exp":4000000000}') AS dave_no_iat \gset
SELECT tenantguard.sign_context('{"tid":"initech","sub":"ivan","exp":4000000000,"iat":1700000000}') AS ivan \gset
SELECT tenantguard.sign_context('{"tid":"acme","tids":["initech"],"sub":"holding","exp":4000000000,"iat":1700000000}') AS holding \gset
\c - tg_app
-- The application role cannot revoke (or un-revoke) anything.
SELECT tenantguard.revoke_user('globex', 'bob');
DELETE FROM tenantguard.revocation;
-- A session-scoped context, then the user is revoked elsewhere.
SELECT tenantguard.set_context(:'alice', false);
SELECT count(*) FROM app.orders;
\c - tg_ops
SELECT tenantguard.revoke_user('acme', 'alice');
\c - tg_app
SELECT tenantguard.set_context(:'alice');
SELECT tenantguard.set_context(:'alice2');
-- Other users of the tenant are unaffected.
BEGIN; SELECT tenantguard.set_context(:'carol'); SELECT count(*) FROM app.orders; COMMIT;
-- A token issued after the revocation (a fresh login) works.
\c - postgres
SELECT pg_sleep(1.1);
SELECT tenantguard.sign_context(jsonb_build_object('tid','acme','sub','alice','exp',4000000000,
       'iat', extract(epoch from clock_timestamp())::bigint + 1)) AS alice_new \gset
\c - tg_app
BEGIN; SELECT tenantguard.set_context(:'alice_new'); SELECT count(*) FROM app.orders; COMMIT;
-- One session token.
\c - tg_ops
SELECT tenantguard.revoke_session('s-3');
\c - tg_app
SELECT tenantguard.set_context(:'carol');
-- Tenant-wide: every outstanding token of the tenant, and tokens that read it.
BEGIN; SELECT tenantguard.set_context(:'ivan'); SELECT count(*) FROM app.orders; COMMIT;
\c - tg_ops
SELECT tenantguard.revoke_tenant('initech');
\c - tg_app
SELECT tenantguard.set_context(:'ivan');
SELECT tenantguard.set_context(:'holding');
-- Any user revocation in a tenant refuses tokens without iat for that user.
\c - tg_ops
SELECT tenantguard.revoke_user('acme', 'dave');
\c - tg_app
SELECT tenantguard.set_context(:'dave_no_iat');
-- The trail.
\c - postgres
SELECT event, tenant, db_role, detail FROM tenantguard.security_log WHERE event LIKE 'revoke%' ORDER BY id;
-- Revocations are append-only, even for the owner.
DELETE FROM tenantguard.revocation;
UPDATE tenantguard.revocation SET revoked_at = now();
