# Data-subject rights (GDPR Art. 15, 17, 20), as the application role: a
# tenant's data-protection officer exports and erases one end user; the
# personal values in the audit trail are sealed per subject and become
# unreadable at erasure, while every chain still verifies.
q postgres "CREATE TABLE customers (id int PRIMARY KEY, tenant_id text NOT NULL, user_ref text NOT NULL, email text, name text, birth date);
  SELECT count(*) FROM tenantguard.protect('customers');
  GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO app;" >/dev/null
out=$(q_err app "SELECT tenantguard.mark_subject('customers', 'user_ref', ARRAY['email', 'name', 'birth'])" 2>&1)
check "subjects: the app role cannot declare subjects" has "$out" "permission denied"
q ops "SELECT tenantguard.mark_subject('customers', 'user_ref', ARRAY['email', 'name', 'birth'])" >/dev/null
check "subjects: mark_subject() is kept (subject_table) and on the security trail" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.subject_table WHERE relid = 'customers'::regclass")$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'subject_marked'")" = "11"
q ops "SELECT tenantguard.create_role('acme', 'dpo');
  SELECT tenantguard.grant_permission('acme', 'dpo', 'subject:export');
  SELECT tenantguard.grant_permission('acme', 'dpo', 'subject:erase');
  SELECT tenantguard.assign_role('acme', 'dana', 'dpo');" >/dev/null
DANA=$(tok '{"tid":"acme","sub":"dana","exp":4000000000,"iat":1700000000}')
GLX=$(tok '{"tid":"globex","sub":"gus","exp":4000000000,"iat":1700000000}')
as_acme() { q app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; $1; COMMIT;"; }
as_acme "INSERT INTO customers VALUES (1, 'acme', 'u1', 'alice@acme.test', 'Alice Doe', '1990-01-02')" >/dev/null
as_acme "INSERT INTO customers VALUES (2, 'acme', 'u2', 'bob@acme.test', 'Bob Roe', NULL)" >/dev/null
as_acme "INSERT INTO customers VALUES (3, 'acme', 'u3', 'carol@acme.test', 'Carol Poe', NULL)" >/dev/null
as_acme "UPDATE customers SET name = 'Alice Q. Doe' WHERE id = 1" >/dev/null
q app "BEGIN; SELECT tenantguard.set_context('$GLX') IS NULL; INSERT INTO customers VALUES (11, 'globex', 'u1', 'alice@globex.test', 'Alice Globex', NULL); COMMIT;" >/dev/null
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "subjects: personal values enter the trail sealed (no plaintext email in audit_log)" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log l WHERE l::text LIKE '%alice@acme.test%'")" = "0"
check "subjects: ... as tgs1.<subject_id>.<ciphertext>" \
  test "$(q postgres "SELECT count(*) > 0 FROM tenantguard.audit_log WHERE new_values->>'email' LIKE 'tgs1.%'")" = "t"

ex=$(q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.export_subject('u1'); COMMIT;" | tail -1)
check "export: exactly the subject's rows, in the caller's tenant only" \
  test "$(q postgres "SELECT string_agg(r->>'email', ',') FROM jsonb_array_elements('$ex'::jsonb->'tables'->'customers') r")" = "alice@acme.test"
check "export: the subject's audit records, their personal values opened" \
  test "$(q postgres "SELECT count(*) FILTER (WHERE r::text LIKE '%alice@acme.test%') >= 1 AND count(*) = 2 FROM jsonb_array_elements('$ex'::jsonb->'audit_records') r")" = "t"
check "export: recorded on the security trail, without the data" \
  test "$(q postgres "SELECT count(*) FILTER (WHERE detail::text LIKE '%alice%' OR detail::text LIKE '%u1%') || ':' || count(*) FROM tenantguard.security_log WHERE event = 'subject_exported'")" = "0:1"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; SELECT tenantguard.export_subject('u1'); COMMIT;" 2>&1)
check "export: refused without subject:export" has "$out" "not authorized: subject:export"
out=$(q_err app "SELECT tenantguard.export_subject('u1')" 2>&1)
check "export: refused without a context" has "$out" "no tenant context"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; SELECT tenantguard.erase_subject('u1'); COMMIT;" 2>&1)
check "erase: refused without subject:erase" has "$out" "not authorized: subject:erase"

er=$(q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.erase_subject('u1'); COMMIT;" | tail -1)
check "erase: deletes the subject's rows in the caller's tenant ($er)" test "$(q postgres "SELECT count(*) FROM customers WHERE user_ref = 'u1'")" = "1"
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
for needle in alice@acme.test "Alice Doe" "Alice Q. Doe" 1990-01-02; do
  n=$(q postgres "SELECT (SELECT count(*) FROM customers c WHERE c::text LIKE '%$needle%')
                       + (SELECT count(*) FROM tenantguard.audit_log l WHERE l::text LIKE '%$needle%')
                       + (SELECT count(*) FROM tenantguard.security_log s WHERE s::text LIKE '%$needle%')
                       + (SELECT count(*) FROM tenantguard.export_audit('acme') e WHERE e::text LIKE '%$needle%')")
  check "erase: \"$needle\" is found nowhere (tables, audit_log, security_log, export_audit)" test "$n" = "0"
done
check "erase: every chain still verifies" test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
check "erase: the same subject id in another tenant is untouched" \
  test "$(q postgres "SELECT email FROM customers WHERE tenant_id = 'globex' AND user_ref = 'u1'")" = "alice@globex.test"
ex=$(q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.export_subject('u2'); COMMIT;" | tail -1)
check "erase: another subject's records still open" \
  test "$(q postgres "SELECT count(*) > 0 FROM jsonb_array_elements('$ex'::jsonb->'audit_records') r WHERE r::text LIKE '%bob@acme.test%'")" = "t"
ex=$(q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.export_subject('u1'); COMMIT;" | tail -1)
check "erase: the erased subject's records stay sealed (the key is gone)" \
  test "$(q postgres "SELECT count(*) FILTER (WHERE r::text LIKE '%alice@acme.test%') || ':' || count(*) FILTER (WHERE r::text LIKE '%tgs1.%') FROM jsonb_array_elements('$ex'::jsonb->'audit_records') r")" = "0:3"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; INSERT INTO customers VALUES (4, 'acme', 'u1', 'alice@acme.test', 'Alice', NULL); COMMIT;" 2>&1)
check "erase: a later write does not resurrect the subject (refused: erased)" has "$out" "was erased"
pz=$(q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.erase_subject('u3', 'pseudonymize')->>'pseudonym'; COMMIT;" | tail -1)
check "pseudonymize: the row stays, personal text columns hold the subject's keyed pseudonym, others NULL" \
  test "$(q postgres "SELECT email = '$pz' AND name = '$pz' AND birth IS NULL AND '$pz' LIKE 'pseudonym-%' FROM customers WHERE id = 3")" = "t"
check "subjects: erasures are on the security trail, without the data" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'subject_erased' AND detail::text NOT LIKE '%u1%'")" = "2"
# A dump/restore after an erasure keeps it erased, and the chains verifying.
"$BIN/pg_dump" -Fc -h "$SOCK" -p "$PORT" -U postgres -d postgres -f "$DIR/subjects.dump" 2>"$DIR/subjects-dump.err"
q postgres "CREATE DATABASE subjects_restored" >/dev/null
PGAPPNAME=pg_restore "$BIN/pg_restore" -h "$SOCK" -p "$PORT" -U postgres -d subjects_restored "$DIR/subjects.dump" 2>"$DIR/subjects-restore.err"
check "dump/restore: the erasure holds (no plaintext, the key still destroyed)" \
  test "$(DB=subjects_restored q postgres "SELECT (SELECT count(*) FROM tenantguard.audit_log l WHERE l::text LIKE '%alice@acme.test%') || ':' || (SELECT count(*) FROM tenantguard.subject_key WHERE erased_at IS NOT NULL AND salt IS NULL)")" = "0:2"
check "dump/restore: every chain verifies" test "$(DB=subjects_restored q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
ex=$(DB=subjects_restored q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.export_subject('u2'); COMMIT;" | tail -1)
check "dump/restore: another subject's records still open" \
  test "$(q postgres "SELECT count(*) > 0 FROM jsonb_array_elements('$ex'::jsonb->'audit_records') r WHERE r::text LIKE '%bob@acme.test%'")" = "t"
q postgres "DROP DATABASE subjects_restored" >/dev/null

# lint(): personal-looking columns without a declaration.
q postgres "CREATE TABLE contacts (id int PRIMARY KEY, tenant_id text NOT NULL, user_id text, email text, phone text);
  SELECT count(*) FROM tenantguard.protect('contacts');" >/dev/null
fix=$(q postgres "SELECT fix FROM tenantguard.lint() WHERE code = 'TG023' AND object = 'public.contacts'")
check "lint(): TG023 names the table, with a runnable fix ($fix)" has "$fix" "mark_subject('public.contacts', 'user_id'"
q postgres "$fix" >/dev/null
check "lint(): ... which clears it" test "$(q postgres "SELECT count(*) FROM tenantguard.lint() WHERE code = 'TG023' AND object = 'public.contacts'")" = "0"

# Retention: purged in batches by a scheduler's call, audited, visible in status().
q postgres "CREATE TABLE events (id int PRIMARY KEY, tenant_id text NOT NULL, created_at timestamptz NOT NULL, what text);
  SELECT count(*) FROM tenantguard.protect('events');
  INSERT INTO events SELECT g, 'acme', now() - make_interval(days => g), 'e' FROM generate_series(1, 2500) g;" >/dev/null
out=$(q_err app "SELECT tenantguard.set_retention('events', '30 days')" 2>&1)
check "retention: the app role cannot set it" has "$out" "permission denied"
q ops "SELECT tenantguard.set_retention('events', '30 days', 'created_at', 500)" >/dev/null
out=$(q_err app "CALL tenantguard.purge_retention()" 2>&1)
check "retention: the app role cannot purge" has "$out" "permission denied\|is for superusers"
q postgres "CALL tenantguard.purge_retention()" >/dev/null
check "retention: rows older than the period are gone, the rest stay" test "$(q postgres "SELECT count(*) FROM events")" = "29"
check "retention: progress in status()" \
  test "$(q ops "SELECT tenantguard.status()->'data_subjects'->'retention'->0->>'total_deleted'")" = "2471"
check "retention: each purged row is audited, the run is on the security trail" \
  test "$(q postgres "SELECT tenantguard.audit_flush() >= 0; SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.events' AND action = 'DELETE'" | tail -1):$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'retention_purged'")" = "2471:1"

check "lint(): TG024, subjects declared but actors not sealed, with the fix" \
  has "$(q postgres "SELECT fix FROM tenantguard.lint() WHERE code = 'TG024'")" "SET tenantguard.audit_seal_actor = on"
check "lint(): ... not with the setting on" \
  test "$(q postgres "SET tenantguard.audit_seal_actor = on; SELECT count(*) FROM tenantguard.lint() WHERE code = 'TG024'")" = 0

# The actor is a data subject too (tenantguard.audit_seal_actor): who acted,
# from where and with what, sealed under the actor's key; an auditor (only)
# exports the trail decrypted; erasing the actor makes it unreadable.
out=$(q_err app "SET tenantguard.audit_seal_actor = off" 2>&1)
check "actor: the app role cannot turn sealing off for its session" has "$out" "permission denied"
out=$(q_err app "SET tenantguard.audit_background_max_backlog = 0" 2>&1)
check "audit: the app role cannot lift the background backlog's bound" has "$out" "cannot be changed now\|permission denied"
q postgres "ALTER ROLE app SET tenantguard.audit_seal_actor = on;
  CREATE ROLE auditor LOGIN IN ROLE tenantguard_auditor;
  GRANT SELECT, INSERT, UPDATE, DELETE ON contacts TO app;" >/dev/null
ERIN=$(tok '{"tid":"acme","sub":"u5","exp":4000000000,"iat":1700000000,"ip":"203.0.113.7","ua":"Erin-Browser/1.0"}')
q app "BEGIN; SELECT tenantguard.set_context('$ERIN') IS NULL;
  INSERT INTO customers VALUES (5, 'acme', 'u5', 'erin@acme.test', 'Erin Moe', NULL); COMMIT;" >/dev/null
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
check "actor: actor, client_ip and user_agent enter the trail sealed" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE row_key->>'id' = '5' AND actor LIKE 'tgs1.%' AND client_ip LIKE 'tgs1.%' AND user_agent LIKE 'tgs1.%'")" = "1"
check "actor: the app role reads its tenant's records with the actor sealed" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; SELECT count(*) FROM tenantguard.audit_log WHERE row_key->>'id' = '5' AND actor LIKE 'tgs1.%'; COMMIT;" | tail -1)" = "1"
out=$(q_err app "SELECT count(*) FROM tenantguard.export_audit('acme', decrypt => true)" 2>&1)
check "auditor: the app role cannot export the trail decrypted" has "$out" "permission denied"
out=$(q_err ops "SELECT count(*) FROM tenantguard.export_audit('acme', decrypt => true)" 2>&1)
check "auditor: tenantguard_admin alone cannot either (42501)" has "$out" "only members of tenantguard_auditor"
check "auditor: tenantguard_auditor reads the actor, address and agent in the clear" \
  test "$(q auditor "SELECT count(*) FROM tenantguard.export_audit('acme', decrypt => true) e
                      WHERE e->>'actor' = 'u5' AND e->>'client_ip' = '203.0.113.7' AND e->>'user_agent' = 'Erin-Browser/1.0'
                        AND e->>'new_values' LIKE '%erin@acme.test%'")" = "1"
check "auditor: ... but an erased subject's values stay sealed" \
  test "$(q auditor "SELECT count(*) FROM tenantguard.export_audit('acme', decrypt => true) e WHERE e::text LIKE '%alice@acme.test%'")" = "0"
check "auditor: the decrypted export is on the security trail" \
  test "$(q postgres "SELECT count(*) > 0 FROM tenantguard.security_log WHERE event = 'audit_exported_decrypted' AND tenant = 'acme'")" = "t"
ex=$(q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.export_subject('u5'); COMMIT;" | tail -1)
check "actor: export_subject() includes the records the subject made, opened" \
  test "$(q postgres "SELECT count(*) FROM jsonb_array_elements('$ex'::jsonb->'audit_records') r WHERE r->>'actor' = 'u5' AND r->>'client_ip' = '203.0.113.7'")" = "1"
q app "BEGIN; SELECT tenantguard.set_context('$DANA') IS NULL; SELECT tenantguard.erase_subject('u5'); COMMIT;" >/dev/null
q postgres "SELECT tenantguard.audit_flush()" >/dev/null
for needle in 203.0.113.7 Erin-Browser erin@acme.test; do
  n=$(q auditor "SELECT (SELECT count(*) FROM tenantguard.export_audit('acme', decrypt => true) e WHERE e::text LIKE '%$needle%')")
  n2=$(q postgres "SELECT (SELECT count(*) FROM tenantguard.audit_log l WHERE l::text LIKE '%$needle%') + (SELECT count(*) FROM tenantguard.security_log s WHERE s::text LIKE '%$needle%')")
  check "actor: after erasure \"$needle\" is found nowhere, not even in the auditor's decrypted export" test "$n:$n2" = "0:0"
done
check "actor: ... and no record names u5 as its actor in the clear" \
  test "$(q auditor "SELECT count(*) FROM tenantguard.export_audit('acme', decrypt => true) e WHERE e->>'actor' = 'u5'")" = "0"
check "actor: the security trail's actor is sealed too" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'subject_erased' AND tenant = 'acme' AND actor LIKE 'tgs1.%'")" = "1"
check "actor: every chain still verifies" test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ERIN') IS NULL; UPDATE customers SET name = 'x' WHERE id = 3; COMMIT;" 2>&1)
check "actor: the erased actor's next write is refused (nothing of it is recorded again)" has "$out" "was erased"
q postgres "ALTER ROLE app RESET tenantguard.audit_seal_actor" >/dev/null
