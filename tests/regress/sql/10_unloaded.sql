-- Without preload, a fresh backend has not loaded the library yet, so a SET
-- of tenantguard.context only creates a placeholder. When the library loads
-- (at the first policy or function call) the placeholder is re-checked and
-- discarded, and every accessor verifies what it reads: it fails closed.
-- (With shared_preload_libraries / session_preload_libraries the check hook
-- refuses the SET itself, as in 02_attacks.)
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}') AS acme \gset
SELECT split_part(:'acme', '.', 1) || '.' || split_part(:'acme', '.', 2) || '.AAAA' || substr(split_part(:'acme', '.', 3), 5) AS forged \gset
\c - tg_app
SELECT set_config('tenantguard.context', :'forged', false) = :'forged' AS placeholder_accepted;
SELECT count(*) FROM app.orders;
SELECT tenantguard.has_context();
\c - tg_app
SET tenantguard.context = :'forged';
SELECT tenantguard.tenant_id();
\c - tg_app
BEGIN;
SET LOCAL tenantguard.context = :'forged';
SELECT count(*) FROM app.orders;
ROLLBACK;
