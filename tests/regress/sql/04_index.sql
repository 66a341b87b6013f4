-- Generated policies keep index use, and the accessor runs once per
-- statement (an InitPlan), not once per row.
SET client_min_messages = warning;
SET ROLE tg_owner;
CREATE TABLE app.events (
    id        bigint PRIMARY KEY,
    tenant_id text NOT NULL,
    payload   text NOT NULL
);
RESET ROLE;
INSERT INTO app.events SELECT i, 't' || (i % 100), md5(i::text) FROM generate_series(1, 100000) i;
SELECT count(*) AS ddl FROM tenantguard.protect('app.events');
ANALYZE app.events;
GRANT SELECT ON app.events TO tg_app;
SELECT tenantguard.sign_context('{"tid":"t42","sub":"u","exp":4000000000,"iat":1700000000}') AS t42 \gset
-- EXPLAIN ANALYZE, version-neutral: PG 18 prints rows=N.00 and Index
-- Searches; the plan and the row counts are what this test checks.
CREATE FUNCTION public.explain_rows(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE l text;
BEGIN
  FOR l IN EXECUTE format('EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) %s', q) LOOP
    CONTINUE WHEN l ~ '^\s*Index Searches:';
    RETURN NEXT regexp_replace(l, 'rows=(\d+)\.00 ', 'rows=\1 ', 'g');
  END LOOP;
END $$;
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'t42');
EXPLAIN (COSTS OFF) SELECT count(*) FROM app.events;
EXPLAIN (COSTS OFF) SELECT * FROM app.events WHERE id = 4242;
SELECT * FROM public.explain_rows('SELECT count(*) FROM app.events');
SELECT count(*), min(tenant_id), max(tenant_id) FROM app.events;
COMMIT;
