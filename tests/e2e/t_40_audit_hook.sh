# With shared_preload_libraries, the ProcessUtility hook refuses DDL that
# would silence or remove the audit trail, even for a superuser.
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO t VALUES (40, 'acme'); COMMIT;" >/dev/null
check "status reports the hook active" test "$(q postgres "SELECT tenantguard.status()->>'hooks_active'")" = "true"
refused() { local what=$1 sql=$2; local out; out=$(q_err postgres "$sql" 2>&1); if echo "$out" | grep -q "is refused: it would silence or remove the audit trail"; then ok "superuser: $what refused"; else fail "superuser: $what refused (got: $out)"; fi; }
refused "DISABLE TRIGGER on the audit table" "ALTER TABLE tenantguard.audit_log DISABLE TRIGGER refuse_change"
refused "DISABLE TRIGGER tenantguard_audit" "ALTER TABLE t DISABLE TRIGGER tenantguard_audit"
refused "DISABLE TRIGGER ALL on an audited table" "ALTER TABLE t DISABLE TRIGGER ALL"
refused "ENABLE REPLICA TRIGGER tenantguard_audit" "ALTER TABLE t ENABLE REPLICA TRIGGER tenantguard_audit"
refused "DROP TRIGGER tenantguard_audit" "DROP TRIGGER tenantguard_audit ON t"
refused "DROP TABLE audit_log" "DROP TABLE tenantguard.audit_log"
refused "DROP TABLE of a partition" "DROP TABLE tenantguard.audit_log_default"
refused "RENAME audit_log" "ALTER TABLE tenantguard.audit_log RENAME TO audit_log_old"
refused "TRUNCATE audit_log" "TRUNCATE tenantguard.audit_log"
refused "DROP EXTENSION" "DROP EXTENSION pg_tenantguard CASCADE"
refused "a statistics target together with DISABLE TRIGGER" "ALTER TABLE tenantguard.audit_log ALTER COLUMN payload SET STATISTICS 10, DISABLE TRIGGER refuse_change"
refused "turning autovacuum off on the trail" "ALTER TABLE tenantguard.audit_log_default SET (autovacuum_enabled = off)"
refused "a trigger on the trail" "CREATE FUNCTION public.drop_it() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
  CREATE TRIGGER drop_it BEFORE INSERT ON tenantguard.audit_log_default FOR EACH ROW EXECUTE FUNCTION public.drop_it()"
refused "a trigger calling a refuse_change() of another schema" "CREATE FUNCTION public.refuse_change() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
  SET search_path = public, tenantguard;
  CREATE TRIGGER refuse_change BEFORE INSERT ON tenantguard.audit_log_default FOR EACH ROW EXECUTE FUNCTION refuse_change()"
refused "a rule that discards records" "CREATE RULE no_trail AS ON INSERT TO tenantguard.audit_log DO INSTEAD NOTHING"
# New partitions are made under the guard, without statistics on the recorded values.
check "audit_add_partitions works with the guard on" test "$(q postgres "SELECT tenantguard.audit_add_partitions(8) > 0")" = "t"
check "every partition keeps no statistics on old/new values and payload" test "$(q postgres "SELECT count(*) FROM pg_attribute a JOIN pg_inherits i ON i.inhrelid = a.attrelid
   WHERE i.inhparent = 'tenantguard.audit_log'::regclass AND a.attname IN ('old_values', 'new_values', 'payload') AND a.attstattarget <> 0")" = "0"
out=$(psql -X -q -h "$SOCK" -p "$PORT" -U postgres -d postgres 2>&1 <<SQL
BEGIN;
SELECT tenantguard.set_context('$ACME');
INSERT INTO t VALUES (41, 'acme');
COMMIT;
SET session_replication_role = replica;
SQL
)
check "superuser: SET session_replication_role refused after audited writes" bash -c "echo '$out' | grep -q 'SET session_replication_role in a session that wrote audit records is refused'"
check "refusals leave tenantguard-alert lines" grep -q '"event":"audit_tamper_refused"' "$LOG"
check "the chain still verifies" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
# Maintenance: the switch is in postgresql.conf (sighup), not per session.
check "app role cannot turn the guard off" bash -c "q_err() { :; }; ! psql -X -q -h '$SOCK' -p '$PORT' -U app -d postgres -c 'SET tenantguard.audit_guard = off' 2>/dev/null"
q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
check "with audit_guard = off a superuser may maintain triggers" q postgres "ALTER TABLE t DISABLE TRIGGER tenantguard_audit; ALTER TABLE t ENABLE ALWAYS TRIGGER tenantguard_audit"
q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
refused "DISABLE TRIGGER once the guard is back on" "ALTER TABLE t DISABLE TRIGGER tenantguard_audit"
# Records are appended straight to the trail's heap and indexes. A trail
# not as the extension made it (here: an INSERT trigger a superuser added
# with the guard off) is written by INSERT instead, so nothing is skipped.
q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q postgres "CREATE TABLE public.trail_seen (id bigint); CREATE FUNCTION public.trail_seen() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN INSERT INTO public.trail_seen VALUES (NEW.id); RETURN NULL; END';
  CREATE TRIGGER trail_seen AFTER INSERT ON tenantguard.audit_log FOR EACH ROW EXECUTE FUNCTION public.trail_seen()" >/dev/null
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO t VALUES (44, 'acme'); INSERT INTO t VALUES (45, 'acme'); COMMIT;" >/dev/null
check "a trail given an INSERT trigger is written by INSERT: the trigger sees each of the transaction's records" \
  test "$(q postgres "SELECT count(*) FROM public.trail_seen s JOIN tenantguard.audit_log l ON l.id = s.id WHERE l.row_key->>'id' IN ('44', '45')")" = "2"
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO t SELECT g, 'acme' FROM generate_series(50, 55) g; COMMIT;" >/dev/null
check "... and a flush of more records (one array per column) is written by INSERT too" \
  test "$(q postgres "SELECT count(*) FROM public.trail_seen s JOIN tenantguard.audit_log l ON l.id = s.id WHERE (l.row_key->>'id')::int BETWEEN 50 AND 55")" = "6"
q postgres "DROP TRIGGER trail_seen ON tenantguard.audit_log; DROP FUNCTION public.trail_seen(); DROP TABLE public.trail_seen" >/dev/null
q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
check "the chain verifies across both ways of writing" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
# The trail's row index: off by default (issue 26), built on request.
idx() { q postgres "SELECT count(*) FROM pg_indexes WHERE schemaname = 'tenantguard' AND tablename = 'audit_log' AND indexdef LIKE '%row_key%'"; }
check "row index: not on the trail by default (status() says so)" test "$(idx):$(q postgres "SELECT tenantguard.status()->>'audit_row_index'")" = "0:false"
out=$(q_err app "SELECT tenantguard.audit_row_index()" 2>&1)
check "row index: the app role cannot build it" has "$out" "permission denied"
check "row index: a superuser builds it (the guard on), and a row's history uses it" \
  test "$(q postgres "SELECT tenantguard.audit_row_index()"):$(idx):$(q postgres "SET enable_seqscan = off; EXPLAIN (COSTS OFF) SELECT * FROM tenantguard.audit_log WHERE tenant = 'acme' AND tbl = 'public.t' AND row_key = '{\"id\": 1}'" | grep -q 'Index Scan using .*row_key_idx' && echo used)" = "t:1:used"
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO t VALUES (42, 'acme'); COMMIT;" >/dev/null
check "row index: a record written while it exists is found through it (records are appended with every index entry)" \
  test "$(q postgres "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM tenantguard.audit_log WHERE tenant = 'acme' AND tbl = 'public.t' AND row_key = '{\"id\": \"42\"}'")" = "1"
check "row index: and drops it" test "$(q postgres "SELECT tenantguard.audit_row_index(false)"):$(idx)" = "f:0"
# Each record carries its actor's roles as they are at its statement. The
# answer is kept from one record to the next only while nothing it depends
# on changed: a role granted or revoked, or an assignment's window closing,
# shows in the very next record, within one session and one transaction.
psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres >/dev/null <<SQL
INSERT INTO tenantguard.authz_assignment VALUES ('acme', 'alice', 'editor', now() - interval '1 s', NULL), ('acme', 'alice', 'temp', now() - interval '1 s', now() + interval '1.5 s');
BEGIN;
SELECT tenantguard.set_context('$ACME');
INSERT INTO t VALUES (70, 'acme');
INSERT INTO t VALUES (71, 'acme');
INSERT INTO tenantguard.authz_assignment VALUES ('acme', 'alice', 'auditor');
INSERT INTO t VALUES (72, 'acme');
DELETE FROM tenantguard.authz_assignment WHERE tenant = 'acme' AND user_id = 'alice' AND role = 'editor';
INSERT INTO t VALUES (73, 'acme');
SELECT pg_sleep(1.6);
INSERT INTO t VALUES (74, 'acme');
COMMIT;
DELETE FROM tenantguard.authz_assignment WHERE tenant = 'acme' AND user_id = 'alice';
SQL
roles_of() { q postgres "SELECT coalesce(actor_roles, '-') FROM tenantguard.audit_log WHERE tenant = 'acme' AND tbl = 'public.t' AND row_key->>'id' = '$1'" | tr ',' '\n' | sort | paste -sd,; }
check "actor roles: each record has the roles of its statement (granted, revoked, a window closed)" \
  test "$(roles_of 70) $(roles_of 71) $(roles_of 72) $(roles_of 73) $(roles_of 74)" = "editor,temp editor,temp auditor,editor,temp auditor,temp auditor"
# A record names its table as it is named when the row is written, also in
# a session that wrote to it before a rename (of the table or its schema).
psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres >/dev/null <<SQL
CREATE SCHEMA ren;
CREATE TABLE ren.docs (id int PRIMARY KEY, tenant_id text NOT NULL);
SELECT count(*) FROM tenantguard.protect('ren.docs');
SELECT tenantguard.set_context('$ACME');
INSERT INTO ren.docs VALUES (1, 'acme');
ALTER TABLE ren.docs RENAME TO papers;
INSERT INTO ren.papers VALUES (2, 'acme');
ALTER SCHEMA ren RENAME TO archive;
INSERT INTO archive.papers VALUES (3, 'acme');
SQL
check "a renamed table's (and schema's) next record carries the new name, in the same session" \
  test "$(q postgres "SELECT string_agg(tbl, ' ' ORDER BY seq) FROM tenantguard.audit_log WHERE tenant = 'acme' AND tbl IN ('ren.docs', 'ren.papers', 'archive.papers')")" = "ren.docs ren.papers archive.papers"
# Chain heads are moved directly while audit_head is as the extension made
# it; a session that has moved heads that way sees a trigger added to it
# (here in the same session, with the guard off) and moves them by UPDATE,
# which fires it.
q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres >/dev/null <<SQL
CREATE TABLE public.head_moves (tenant text, seq bigint);
CREATE FUNCTION public.head_moved() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN INSERT INTO public.head_moves VALUES (NEW.tenant, NEW.seq); RETURN NEW; END';
SELECT tenantguard.set_context('$ACME');
INSERT INTO t VALUES (80, 'acme');
CREATE TRIGGER head_moved AFTER UPDATE ON tenantguard.audit_head FOR EACH ROW EXECUTE FUNCTION public.head_moved();
INSERT INTO t VALUES (81, 'acme');
DROP TRIGGER head_moved ON tenantguard.audit_head;
INSERT INTO t VALUES (82, 'acme');
SQL
q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
check "a trigger added to audit_head in a session that moved heads directly sees the next move (and only while it exists)" \
  test "$(q postgres "SELECT string_agg(l.row_key->>'id', ',') FROM public.head_moves m JOIN tenantguard.audit_log l ON l.tenant = m.tenant AND l.seq = m.seq")" = "81"
check "the chain verifies after heads moved both ways" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
# Records hold exactly what the application role wrote, whatever it wrote:
# values and column names with quotes, backslashes, control characters,
# text that looks like JSON escapes, non-ASCII and long values (row images
# reach jsonb's normal form in Rust; the chain hashes that text and
# verification reads the stored jsonb back).
q postgres "CREATE TABLE odd (id int PRIMARY KEY, tenant_id text NOT NULL, \"quo\"\"te\" text, \"ключ\" text, \"a\\b/c\" text);
  SELECT count(*) FROM tenantguard.protect('odd'); GRANT SELECT, INSERT, UPDATE ON odd TO app;" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U app -d postgres >/dev/null <<SQL
BEGIN;
SELECT tenantguard.set_context('$ACME');
INSERT INTO odd VALUES (1, 'acme', E'q"u\\\\o\\\\"te\\n\\t\\r\\b\\f\\x01\\x1f\\x7f', 'é ü 漢字 😀', '\\u0000 \\ud83d {"k": [1, "x"]}');
INSERT INTO odd VALUES (2, 'acme', repeat('long ', 5000), '', NULL);
UPDATE odd SET "ключ" = E'новое\\u2028значение' WHERE id = 1;
COMMIT;
SQL
check "as the app role: odd values and column names are recorded exactly, and the chain verifies" \
  test "$(q postgres "SELECT bool_and(CASE l.action
            WHEN 'UPDATE' THEN l.new_values->>'ключ' = o.\"ключ\" AND l.old_values->>'ключ' = 'é ü 漢字 😀'
            ELSE l.new_values->>'quo\"te' IS NOT DISTINCT FROM o.\"quo\"\"te\" AND l.new_values->>'a\\b/c' IS NOT DISTINCT FROM o.\"a\\b/c\"
                 AND (o.id = 1 OR l.new_values->>'ключ' IS NOT DISTINCT FROM o.\"ключ\") END)
          FROM tenantguard.audit_log l JOIN odd o ON l.row_key->>'id' = o.id::text WHERE l.tbl = 'public.odd'"):$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.odd'"):$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t:3:t"
# Roles revoked by an admin while the application's session is open show
# in that session's next record (the remembered answer is dropped when the
# authorization tables change, in any session).
q postgres "INSERT INTO tenantguard.authz_assignment VALUES ('acme', 'alice', 'editor', now() - interval '1 s', NULL)" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U app -d postgres >/dev/null <<SQL &
BEGIN;
SELECT tenantguard.set_context('$ACME');
INSERT INTO t VALUES (90, 'acme');
SELECT pg_sleep(1.5);
INSERT INTO t VALUES (91, 'acme');
COMMIT;
SQL
app_session=$!
sleep 0.7
q postgres "DELETE FROM tenantguard.authz_assignment WHERE tenant = 'acme' AND user_id = 'alice'" >/dev/null
wait $app_session
check "as the app role: a role revoked in another session is gone from this session's next record" \
  test "$(roles_of 90) $(roles_of 91)" = "editor -"
