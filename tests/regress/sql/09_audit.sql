-- Audit capture, immutability and tamper evidence. Tampering is attempted
-- as the application role (refused) and as a superuser (refused or
-- detected by verify_audit). Hook-level refusals (DDL) need preload and are
-- tested in tests/e2e/t_40_audit_hook.sh.
\set VERBOSITY terse
SELECT tenantguard.sign_context('{"tid":"acme","sub":"amy","exp":4000000000,"iat":1700000000,"ip":"203.0.113.9","ua":"demo-browser/1.0"}') AS acme \gset
SELECT tenantguard.sign_context('{"tid":"globex","sub":"bob","exp":4000000000,"iat":1700000000}') AS globex \gset
SELECT tenantguard.audit('app.orders', redact => '{amount}');
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.orders (item, amount) VALUES ('audited', 1);
UPDATE app.orders SET item = 'audited-2' WHERE item = 'audited';
DELETE FROM app.orders WHERE item = 'audited-2';
SELECT tenantguard.log_event('export', 'report', 'r-1', '{"rows": 3}') > 0 AS logged;
COMMIT;
BEGIN;
SELECT tenantguard.set_context(:'globex');
INSERT INTO app.orders (item, amount) VALUES ('globex-audited', 2);
COMMIT;
-- The application role reads its own tenant's records only.
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT tenant, seq, actor, db_role, action, tbl, old_values - 'id' AS old_values, new_values - 'id' AS new_values,
       client_ip, user_agent, payload - 'valid_until' AS payload
  FROM tenantguard.audit_log ORDER BY seq;
SELECT DISTINCT tenant FROM tenantguard.audit_log;
ROLLBACK;
-- ... and can neither change nor remove them.
UPDATE tenantguard.audit_log SET actor = 'mallory';
DELETE FROM tenantguard.audit_log;
TRUNCATE tenantguard.audit_log;
INSERT INTO tenantguard.audit_log (id, tenant, seq, at, db_role, action, txid, key_id, prev_hash, hash)
    VALUES (0, 'acme', 99, now(), 'x', 'forged', 0, 'k', '\x00', '\x00');
ALTER TABLE tenantguard.audit_log DISABLE TRIGGER refuse_change;
SELECT tenantguard.verify_audit();
-- Superuser: UPDATE/DELETE/TRUNCATE refused by ALWAYS triggers, also in replica mode.
\c - postgres
UPDATE tenantguard.audit_log SET actor = 'mallory';
DELETE FROM tenantguard.audit_log;
TRUNCATE tenantguard.audit_log;
TRUNCATE tenantguard.audit_log_default;
SET session_replication_role = replica;
DELETE FROM tenantguard.audit_log;
RESET session_replication_role;
SELECT count(*) AS chains, sum(records) > 20 AS records, bool_and(first_bad_id IS NULL) AS no_bad_record, bool_and(ok) AS all_ok FROM tenantguard.verify_audit();
SELECT tenant, records, ok FROM tenantguard.verify_audit('acme');
SELECT jsonb_agg(d) AS digest FROM tenantguard.audit_digest() d \gset
-- Export for auditors: one JSON object per record with its hashes.
SELECT count(*) AS exported, bool_and(e ? 'hash' AND e ? 'prev_hash') AS with_hashes
  FROM tenantguard.export_audit('acme') e;
-- From here on, tampering a superuser can do without the preload hook,
-- each detected by verify_audit.
-- (each tamper runs in a subtransaction that is rolled back afterwards,
--  so the next one starts from the intact chain; the verdict is captured first)
CREATE TEMP TABLE verdicts (what text, tenant text, first_bad_is_set boolean, ok boolean);
CREATE FUNCTION pg_temp.try(what text, sql text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE v_tenant text; v_bad boolean; v_ok boolean;
BEGIN
    BEGIN
        ALTER TABLE tenantguard.audit_log DISABLE TRIGGER refuse_change;
        EXECUTE sql;
        ALTER TABLE tenantguard.audit_log ENABLE ALWAYS TRIGGER refuse_change;
        SELECT r.tenant, r.first_bad_id IS NOT NULL, r.ok INTO v_tenant, v_bad, v_ok
          FROM tenantguard.verify_audit('acme') r;
        RAISE EXCEPTION 'undo' USING ERRCODE = 'P0001';
    EXCEPTION WHEN SQLSTATE 'P0001' THEN
        NULL;  -- the tamper is rolled back; the verdict survives in variables
    END;
    INSERT INTO verdicts VALUES (what, v_tenant, v_bad, v_ok);
END $$;
SELECT pg_temp.try('update a payload', $q$UPDATE tenantguard.audit_log SET payload = '{"rows": 3000}' WHERE tenant = 'acme' AND payload IS NOT NULL$q$);
SELECT pg_temp.try('update the actor', $q$UPDATE tenantguard.audit_log SET actor = 'mallory' WHERE tenant = 'acme' AND seq = 2$q$);
SELECT pg_temp.try('delete a row', $q$DELETE FROM tenantguard.audit_log WHERE tenant = 'acme' AND seq = 2$q$);
SELECT pg_temp.try('delete the last row', $q$DELETE FROM tenantguard.audit_log WHERE tenant = 'acme' AND seq = (SELECT max(seq) FROM tenantguard.audit_log WHERE tenant = 'acme')$q$);
SELECT pg_temp.try('insert a forged row', $q$INSERT INTO tenantguard.audit_log SELECT id + 1000, tenant, seq, at, actor, actor_roles, db_role, 'DELETE', tbl, row_key, old_values, new_values, client_ip, user_agent, application_name, txid, payload, key_id, prev_hash, hash FROM tenantguard.audit_log WHERE tenant = 'acme' AND seq = 2$q$);
SELECT pg_temp.try('reorder two rows', $q$UPDATE tenantguard.audit_log SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END WHERE tenant = 'acme' AND seq IN (2, 3)$q$);
SELECT pg_temp.try('recompute one hash without the key', $q$UPDATE tenantguard.audit_log SET action = 'INSERT', hash = sha256(convert_to('guess', 'UTF8')) WHERE tenant = 'acme' AND seq = 3$q$);
SELECT pg_temp.try('move a record to another tenant', $q$UPDATE tenantguard.audit_log SET tenant = 'acme', seq = 99 WHERE tenant = 'globex'$q$);
SELECT pg_temp.try('truncate the trail', $q$
    DO $d$ DECLARE p regclass; BEGIN
      FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'tenantguard.audit_log'::regclass LOOP
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER refuse_truncate', p);
      END LOOP; END $d$;
    ALTER TABLE tenantguard.audit_log DISABLE TRIGGER refuse_truncate;
    TRUNCATE tenantguard.audit_log$q$);
SELECT * FROM verdicts;
-- After all that (rolled back), the chain and the earlier digest still verify.
SELECT count(*) AS chains, bool_and(ok) AS all_ok FROM tenantguard.verify_audit();
SELECT count(*) AS chains, bool_and(ok) AS all_ok FROM tenantguard.verify_audit_against(:'digest');
-- Drop and re-create the table. DROP is refused (the extension owns the
-- table); a superuser's equivalent, swapping in an empty table, is caught:
-- the chain heads no longer match.
BEGIN;
DROP TABLE tenantguard.audit_log;
ROLLBACK;
BEGIN;
ALTER TABLE tenantguard.audit_log RENAME TO audit_log_old;
CREATE TABLE tenantguard.audit_log (LIKE tenantguard.audit_log_old);
SELECT count(*) AS chains, bool_and(ok) AS all_ok, sum(records) AS records FROM tenantguard.verify_audit();
ROLLBACK;
-- Security events (bypass, revocation, ...) are chained too.
SELECT count(*) > 0 AS security_events_chained FROM tenantguard.audit_log WHERE action LIKE 'security:%';
-- Retention: the export records the SHA-256 of its JSON lines (what
-- `psql -At ... > file; sha256sum file` prints) and its seq range.
SELECT records, first_seq, last_seq = (SELECT max(seq) FROM tenantguard.audit_log WHERE tenant = 'acme') AS to_head,
       digest = (SELECT encode(sha256(convert_to(string_agg(e::text || E'\n', '' ORDER BY o), 'UTF8')), 'hex')
                   FROM tenantguard.export_audit('acme') WITH ORDINALITY AS x(e, o)) AS digest_is_sha256_of_lines
  FROM tenantguard.audit_export WHERE tenant = 'acme' ORDER BY id LIMIT 1;
-- drop_audit_partition refuses the default partition, a partition within
-- retention (84 months by default) and anything that is not a partition.
SHOW tenantguard.audit_retention_months;
SELECT * FROM tenantguard.drop_audit_partition('tenantguard.audit_log_default');
DO $$ BEGIN
  PERFORM tenantguard.drop_audit_partition(format('tenantguard.%I', 'audit_log_' || to_char(now(), 'YYYYMM'))::regclass);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  RAISE NOTICE 'current partition refused: %', (SQLERRM LIKE '%within the retention of 84 months%');
END $$;
SELECT * FROM tenantguard.drop_audit_partition('tenantguard.audit_head');
-- Exports and checkpoints are append-only evidence too.
UPDATE tenantguard.audit_export SET digest = 'x';
TRUNCATE tenantguard.audit_checkpoint;
-- The application role cannot call it at all, nor set the retention.
\c - tg_app
SELECT * FROM tenantguard.drop_audit_partition('tenantguard.audit_log_default');
SELECT tenantguard.has_context();
SET tenantguard.audit_retention_months = 1;
\c - postgres
-- Within a transaction the chain head stays locked, so appends after the
-- first continue from the head they left. A savepoint rolled back undoes
-- its records and the head, and the next record links to what survived;
-- so does an exception block. Interleaved tenants keep separate chains.
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'acme');
SELECT max(seq) AS acme_seq FROM tenantguard.audit_log WHERE tenant = 'acme' \gset
INSERT INTO app.orders (item, amount) VALUES ('sp-1', 1);
SAVEPOINT s;
INSERT INTO app.orders (item, amount) VALUES ('sp-2', 2);
SELECT tenantguard.log_event('inside', 'savepoint', 's', '{"n": 1}') > 0 AS logged;
ROLLBACK TO SAVEPOINT s;
INSERT INTO app.orders (item, amount) VALUES ('sp-3', 3);
DO $$ BEGIN
  INSERT INTO app.orders (item, amount) VALUES ('sp-4', 4);
  RAISE EXCEPTION 'undo' USING ERRCODE = 'P0001';
EXCEPTION WHEN SQLSTATE 'P0001' THEN NULL;
END $$;
SAVEPOINT t;
UPDATE app.orders SET amount = 30 WHERE item = 'sp-3';
RELEASE SAVEPOINT t;
SELECT tenantguard.log_event('after', 'savepoint', 's', '{"n": 2}') > 0 AS logged;
SELECT seq - :acme_seq AS seq, action, tbl, new_values ->> 'item' AS item, payload FROM tenantguard.audit_log
 WHERE tenant = 'acme' AND seq > :acme_seq ORDER BY seq;
COMMIT;
BEGIN;
SELECT tenantguard.set_context(:'globex');
INSERT INTO app.orders (item, amount) VALUES ('globex-2', 1);
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.orders (item, amount) VALUES ('acme-again', 1);
SELECT tenantguard.set_context(:'globex');
INSERT INTO app.orders (item, amount) VALUES ('globex-3', 1);
COMMIT;
-- Many records per transaction: the head row moves with the first few
-- only, and is brought up to the last record before commit, also after a
-- savepoint rollback that removed the newest records.
BEGIN;
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.orders (item, amount) SELECT 'bulk-' || g, g FROM generate_series(1, 20) g;
SAVEPOINT s;
INSERT INTO app.orders (item, amount) SELECT 'gone-' || g, g FROM generate_series(1, 10) g;
ROLLBACK TO SAVEPOINT s;
INSERT INTO app.orders (item, amount) VALUES ('bulk-last', 1);
SAVEPOINT t;
INSERT INTO app.orders (item, amount) SELECT 'gone-' || g, g FROM generate_series(1, 10) g;
ROLLBACK TO SAVEPOINT t;
COMMIT;
\c - postgres
SELECT h.seq = (SELECT max(seq) FROM tenantguard.audit_log WHERE tenant = 'acme') AS head_at_last_record,
       h.hash = (SELECT hash FROM tenantguard.audit_log WHERE tenant = 'acme' ORDER BY seq DESC LIMIT 1) AS head_hash_matches,
       (SELECT count(*) FROM tenantguard.audit_log WHERE tenant = 'acme' AND new_values ->> 'item' LIKE 'gone-%') AS rolled_back_records
  FROM tenantguard.audit_head h WHERE h.tenant = 'acme';
-- Records are written in batches (at commit, every 256 records, when an id
-- is needed): a batch written inside a savepoint that is rolled back takes
-- the records appended before the savepoint with it, and they are written
-- again; records of a released savepoint go with its parent's rollback.
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.orders (item, amount) VALUES ('batch-pre', 1);
SAVEPOINT s;
INSERT INTO app.orders (item, amount) SELECT 'batch-gone-' || g, g FROM generate_series(1, 300) g;
ROLLBACK TO SAVEPOINT s;
INSERT INTO app.orders (item, amount) VALUES ('batch-post', 1);
SAVEPOINT a;
INSERT INTO app.orders (item, amount) VALUES ('batch-gone-a', 1);
SAVEPOINT b;
INSERT INTO app.orders (item, amount) SELECT 'batch-gone-b-' || g, g FROM generate_series(1, 300) g;
RELEASE SAVEPOINT b;
ROLLBACK TO SAVEPOINT a;
SAVEPOINT c;
INSERT INTO app.orders (item, amount) SELECT 'batch-kept-' || g, g FROM generate_series(1, 300) g;
RELEASE SAVEPOINT c;
DO $$ BEGIN
  INSERT INTO app.orders (item, amount) SELECT 'batch-gone-x-' || g, g FROM generate_series(1, 300) g;
  RAISE EXCEPTION 'undo' USING ERRCODE = 'P0001';
EXCEPTION WHEN SQLSTATE 'P0001' THEN NULL;
END $$;
INSERT INTO app.orders (item, amount) VALUES ('batch-last', 1);
COMMIT;
\c - postgres
SELECT count(*) FILTER (WHERE new_values ->> 'item' = 'batch-pre') AS pre,
       count(*) FILTER (WHERE new_values ->> 'item' = 'batch-post') AS post,
       count(*) FILTER (WHERE new_values ->> 'item' LIKE 'batch-kept-%') AS kept,
       count(*) FILTER (WHERE new_values ->> 'item' = 'batch-last') AS last,
       count(*) FILTER (WHERE new_values ->> 'item' LIKE 'batch-gone%') AS gone,
       count(DISTINCT seq) = count(*) AS distinct_seqs
  FROM tenantguard.audit_log WHERE tenant = 'acme' AND new_values ->> 'item' LIKE 'batch-%';
SELECT array_agg(new_values ->> 'item' ORDER BY seq) FILTER (WHERE new_values ->> 'item' NOT LIKE 'batch-kept-%') AS order_of_the_others
  FROM tenantguard.audit_log WHERE tenant = 'acme' AND new_values ->> 'item' LIKE 'batch-%';
SELECT tenant, ok FROM tenantguard.verify_audit('acme');
SELECT h.seq = (SELECT max(seq) FROM tenantguard.audit_log WHERE tenant = 'acme') AS head_at_last_record
  FROM tenantguard.audit_head h WHERE h.tenant = 'acme';
-- A record id asked for when the pending records are one short of a batch.
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.order_log (seen_tenant, order_id) SELECT 'edge', g FROM generate_series(1, 255) g;
SELECT tenantguard.log_event('batch-edge', 'doc', 'e', '{}') > 0 AS logged;
COMMIT;
\c - postgres
SELECT count(*) FILTER (WHERE tbl = 'app.order_log' AND new_values ->> 'seen_tenant' = 'edge') AS edge_rows,
       count(*) FILTER (WHERE action = 'event:batch-edge') AS edge_event
  FROM tenantguard.audit_log WHERE tenant = 'acme';
-- Verification inside the writing transaction sees the head brought up to date.
BEGIN;
SELECT tenantguard.set_context(:'acme');
INSERT INTO app.orders (item, amount) SELECT 'more-' || g, g FROM generate_series(1, 20) g;
SELECT tenant, ok FROM tenantguard.verify_audit('acme');
-- A verification inside a savepoint that is rolled back: its head update
-- goes with it, and the head is still brought up to date before commit.
INSERT INTO app.orders (item, amount) SELECT 'later-' || g, g FROM generate_series(1, 5) g;
SAVEPOINT v;
SELECT tenant, ok FROM tenantguard.verify_audit('acme');
ROLLBACK TO SAVEPOINT v;
COMMIT;
SELECT h.seq = (SELECT max(seq) FROM tenantguard.audit_log WHERE tenant = 'acme') AS head_at_last_record
  FROM tenantguard.audit_head h WHERE h.tenant = 'acme';
SELECT tenant, ok, first_bad_id FROM tenantguard.verify_audit() WHERE tenant IN ('acme', 'globex') ORDER BY tenant;
-- Records of one tenant: seq without gaps, ids rising with seq, every link in place.
SELECT tenant, count(*) = max(seq) - min(seq) + 1 AS no_gaps,
       bool_and(prev_ok) AS linked, bool_and(id_rises) AS ids_rise
  FROM (SELECT tenant, seq, prev_hash = lag(hash) OVER w OR lag(hash) OVER w IS NULL AS prev_ok,
               id > coalesce(lag(id) OVER w, 0) AS id_rises
          FROM tenantguard.audit_log WHERE tenant IN ('acme', 'globex') WINDOW w AS (PARTITION BY tenant ORDER BY seq)) x
 GROUP BY tenant ORDER BY tenant;
