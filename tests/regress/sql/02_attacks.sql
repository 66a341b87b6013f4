-- Every attack here must fail. Run as the application role.
\set VERBOSITY default
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}') AS acme \gset
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":1000000000,"iat":900000000}') AS expired \gset
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"nbf":3900000000}') AS future \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"mallory","exp":4000000000}', 'old-2025') AS globex_old_key \gset
-- Building blocks for forgeries, computed in SQL from a real token.
SELECT split_part(:'acme', '.', 1) AS h, split_part(:'acme', '.', 2) AS p, split_part(:'acme', '.', 3) AS s \gset
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql AS
$$ SELECT translate(rtrim(encode(convert_to(t, 'UTF8'), 'base64'), '='), E'+/\n', '-_') $$;
SELECT pg_temp.b64url('{"tid":"globex","sub":"alice","exp":4000000000,"iat":1700000000}') AS p_globex \gset
SELECT pg_temp.b64url('{"alg":"none","typ":"JWT","kid":"demo-2026"}') AS h_none \gset
SELECT pg_temp.b64url('{"alg":"HS512","typ":"JWT","kid":"demo-2026"}') AS h_hs512 \gset
SELECT pg_temp.b64url('{"alg":"RS256","typ":"JWT","kid":"demo-2026"}') AS h_rs256 \gset
SELECT pg_temp.b64url('{"alg":"HS256","typ":"JWT","kid":"old-2025"}') AS h_swapped \gset
SELECT pg_temp.b64url('{"alg":"HS256","typ":"JWT","kid":"nosuchkey"}') AS h_unknown \gset
SELECT repeat('A', 9000) AS huge \gset
\c - tg_app
\set VERBOSITY default
-- 1. Plain GUC spoofing: the application-level variable is not consulted at all.
SET app.tenant_id = 'globex';
SELECT set_config('app.current_tenant_id', 'globex', false);
SELECT count(*) FROM app.orders;
-- 2. set_config / SET of the real GUC with garbage or forgeries.
SELECT set_config('tenantguard.context', 'globex', false);
SET tenantguard.context = 'globex';
SET LOCAL tenantguard.context = '{"tid":"globex"}';
-- payload swapped to another tenant, signature kept (tampering)
SELECT set_config('tenantguard.context', :'h' || '.' || :'p_globex' || '.' || :'s', false);
-- alg=none, with and without an empty signature
SELECT set_config('tenantguard.context', :'h_none' || '.' || :'p_globex' || '.', false);
SELECT set_config('tenantguard.context', :'h_none' || '.' || :'p_globex', false);
-- alg confusion: HS512 / RS256 headers over a valid HS256 signature
SELECT set_config('tenantguard.context', :'h_hs512' || '.' || :'p' || '.' || :'s', false);
SELECT set_config('tenantguard.context', :'h_rs256' || '.' || :'p' || '.' || :'s', false);
-- swapped kid (signed with demo-2026, header says old-2025) and unknown kid
SELECT set_config('tenantguard.context', :'h_swapped' || '.' || :'p' || '.' || :'s', false);
SELECT set_config('tenantguard.context', :'h_unknown' || '.' || :'p' || '.' || :'s', false);
-- truncated and oversized
SELECT set_config('tenantguard.context', left(:'acme', length(:'acme') - 5), false);
SELECT set_config('tenantguard.context', left(:'acme', 40), false);
SELECT set_config('tenantguard.context', :'huge', false);
-- expired and not yet valid
SELECT tenantguard.set_context(:'expired');
SELECT tenantguard.set_context(:'future');
-- Nothing above took effect.
SELECT tenantguard.has_context();
SELECT count(*) FROM app.orders;
-- 3. A refused value leaves the previous (valid) one in place.
BEGIN;
SELECT tenantguard.set_context(:'acme');
SAVEPOINT s1;
SELECT set_config('tenantguard.context', :'h' || '.' || :'p_globex' || '.' || :'s', true);
ROLLBACK TO s1;
SELECT tenantguard.tenant_id();
COMMIT;
-- 4. A token signed with a key that is still configured (rotation) works;
--    it is still only its own tenant.
BEGIN;
SELECT tenantguard.set_context(:'globex_old_key');
SELECT DISTINCT tenant_id FROM app.orders;
COMMIT;
-- 5. SET ROLE / SET SESSION AUTHORIZATION to a privileged role.
SET ROLE postgres;
SET ROLE tg_owner;
SET SESSION AUTHORIZATION postgres;
-- 6. RESET / RESET ALL / DISCARD ALL leave no context: fail closed.
BEGIN;
SELECT tenantguard.set_context(:'acme');
RESET tenantguard.context;
SELECT count(*) FROM app.orders;
ROLLBACK;
BEGIN;
SELECT tenantguard.set_context(:'acme');
RESET ALL;
SELECT tenantguard.has_context();
ROLLBACK;
-- 7. Context is transaction-scoped: it does not leak into the next transaction.
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT count(*) FROM app.orders;
COMMIT;
SELECT tenantguard.has_context();
SELECT count(*) FROM app.orders;
-- ... nor out of a rolled-back transaction or savepoint.
BEGIN;
SELECT tenantguard.set_context(:'acme');
ROLLBACK;
SELECT tenantguard.has_context();
BEGIN;
SAVEPOINT a;
SELECT tenantguard.set_context(:'acme');
ROLLBACK TO a;
SELECT tenantguard.has_context();
COMMIT;
-- 8. Session scope only when asked for explicitly, and clear_context ends it.
SELECT tenantguard.set_context(:'acme', false);
SELECT count(*) FROM app.orders;
SELECT tenantguard.clear_context();
SELECT tenantguard.has_context();
-- 9. A typo in the reserved prefix is an error, not a silent placeholder.
SET tenantguard.contxt = 'x';
-- 10. The signing keys and the minting function are out of reach.
SHOW tenantguard.signing_keys;
SELECT current_setting('tenantguard.signing_keys');
SELECT count(*) FROM pg_settings WHERE name LIKE 'tenantguard.signing%';
SELECT tenantguard.sign_context('{"tid":"globex","sub":"x","exp":4000000000}');
SET tenantguard.signing_keys = 'evil:0123456789abcdef0123456789abcdef';
-- 11. ALTER ROLE ... SET and a function's SET clause go through the same check.
ALTER ROLE tg_app SET tenantguard.context = 'forged';
CREATE FUNCTION pg_temp.sneaky() RETURNS bigint LANGUAGE sql
    SET tenantguard.context = 'eyJhbGciOiJub25lIn0.eyJ0aWQiOiJnbG9iZXgifQ.' AS $$ SELECT count(*) FROM app.orders $$;
-- 12. DISCARD ALL (what poolers run between clients) drops a session context.
SELECT tenantguard.set_context(:'acme', false);
DISCARD ALL;
SELECT tenantguard.has_context();
-- 13. A token for another tenant gives that tenant only, never the union.
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT tenantguard.set_context(:'globex_old_key');
SELECT DISTINCT tenant_id FROM app.orders;
COMMIT;
