-- Reads are scoped to the context's tenant; writes go to the active tenant.
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}') AS acme \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000}') AS globex \gset
SELECT tenantguard.sign_context('{"tid":"acme","tids":["initech"],"sub":"holding","exp":4000000000,"iat":1700000000}') AS holding \gset
SELECT tenantguard.sign_context('{"tid":"00000000-0000-0000-0000-00000000000a","sub":"u","exp":4000000000,"iat":1700000000}') AS uuid_a \gset
SELECT tenantguard.sign_context('{"tid":2,"sub":"u","exp":4000000000,"iat":1700000000}') AS big_2 \gset
\c - tg_app
SELECT current_user, (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) AS privileged;
-- No context: fail closed, never "all tenants".
SELECT tenantguard.has_context();
SELECT * FROM app.orders;
SELECT tenantguard.tenant_id();
-- acme sees only acme.
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT tenantguard.tenant_id(), tenantguard.user_id(), tenantguard.tenant_ids(), tenantguard.has_context();
SELECT tenantguard.claims() ->> 'sub' AS sub;
SELECT tenant_id, item FROM app.orders ORDER BY id;
SELECT count(*) FROM app.orders WHERE tenant_id = 'globex';
-- UPDATE/DELETE cannot reach another tenant's rows.
WITH u AS (UPDATE app.orders SET amount = 0 WHERE tenant_id = 'globex' RETURNING 1) SELECT count(*) AS updated FROM u;
WITH d AS (DELETE FROM app.orders WHERE tenant_id = 'globex' RETURNING 1) SELECT count(*) AS deleted FROM d;
-- Moving an own row to another tenant is refused.
UPDATE app.orders SET tenant_id = 'globex' WHERE item = 'anvil';
-- The default fills in the active tenant.
INSERT INTO app.orders (item) VALUES ('dynamite') RETURNING tenant_id, item;
COMMIT;
-- globex sees only globex, including none of acme's new row.
BEGIN;
SELECT tenantguard.set_context(:'globex');
SELECT tenant_id, item FROM app.orders ORDER BY id;
COMMIT;
-- A holding user reads acme and initech, but writes only to acme.
BEGIN;
SELECT tenantguard.set_context(:'holding');
SELECT tenantguard.tenant_ids();
SELECT tenant_id, item FROM app.orders ORDER BY id;
INSERT INTO app.orders (tenant_id, item) VALUES ('initech', 'x');
ROLLBACK;
BEGIN;
SELECT tenantguard.set_context(:'holding');
WITH u AS (UPDATE app.orders SET amount = amount + 1 WHERE tenant_id = 'initech' RETURNING 1) SELECT count(*) AS updated_in_read_only_tenant FROM u;
ROLLBACK;
-- Typed tenant columns: uuid and bigint.
BEGIN;
SELECT tenantguard.set_context(:'uuid_a');
SELECT name FROM app.accounts;
SELECT tenantguard.tenant_id_uuid();
SELECT * FROM app.counters;
ROLLBACK;
BEGIN;
SELECT tenantguard.set_context(:'big_2');
SELECT * FROM app.counters;
SELECT tenantguard.tenant_id_bigint(), tenantguard.tenant_ids_int();
ROLLBACK;
-- Answers are kept per token and per backend: the same tokens set again and
-- again, in turn, in new transactions, by savepoint restores and by a
-- function's SET clause, each read their own scope.
CREATE FUNCTION pg_temp.scope_under(tok text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('tenantguard.context', tok, true);
  RETURN tenantguard.tenant_id() || ':' || array_to_string(tenantguard.tenant_ids(), ',');
END $$;
SELECT pg_temp.scope_under(t) FROM unnest(ARRAY[:'holding', :'acme', :'globex', :'holding', :'globex', :'acme']) WITH ORDINALITY u(t, n) ORDER BY n;
BEGIN;
SELECT tenantguard.set_context(:'holding');
SELECT tenantguard.tenant_ids(), (SELECT string_agg(DISTINCT tenant_id, ',') FROM app.orders);
SAVEPOINT s;
SELECT tenantguard.set_context(:'globex');
SELECT tenantguard.tenant_ids(), (SELECT string_agg(DISTINCT tenant_id, ',') FROM app.orders);
ROLLBACK TO s;
SELECT tenantguard.tenant_ids(), (SELECT string_agg(DISTINCT tenant_id, ',') FROM app.orders);
COMMIT;
BEGIN; SELECT tenantguard.set_context(:'globex'); SELECT tenantguard.tenant_ids(), tenantguard.tenant_id(); COMMIT;
BEGIN; SELECT tenantguard.set_context(:'holding'); SELECT tenantguard.tenant_ids(), tenantguard.tenant_id(); COMMIT;
BEGIN; SELECT tenantguard.set_context(:'big_2'); SELECT tenantguard.tenant_ids_int(), tenantguard.tenant_ids(); COMMIT;
BEGIN; SELECT tenantguard.set_context(:'globex'); SELECT tenantguard.tenant_ids(), tenantguard.tenant_id(); COMMIT;
