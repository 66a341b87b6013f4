# pg_dump / pg_restore of a database that uses the extension keeps the
# protected tables and policies, the authz model, allowlists, audit records
# with a chain that still verifies, and decryptable ciphertexts; restoring
# neither double-applies triggers nor double-encrypts.
q postgres "CREATE DATABASE dumpsrc" >/dev/null
DB=dumpsrc
q postgres "CREATE EXTENSION pg_tenantguard;
  CREATE TABLE docs (id int PRIMARY KEY, tenant_id text NOT NULL, body text, secret bytea);
  SELECT count(*) FROM tenantguard.protect('docs');
  GRANT SELECT, INSERT ON docs TO app;
  SELECT tenantguard.create_role('acme', 'clerk');
  SELECT tenantguard.grant_permission('acme', 'clerk', 'doc:read');
  SELECT tenantguard.assign_role('acme', 'alice', 'clerk');
  SELECT tenantguard.set_ip_allowlist('globex', '{10.0.0.0/8}');" >/dev/null
T=$(q postgres "SELECT tenantguard.sign_context('{\"tid\":\"acme\",\"sub\":\"alice\",\"exp\":4000000000,\"iat\":1700000000}')")
psql -X -q -h "$SOCK" -p "$PORT" -U app -d dumpsrc >/dev/null <<SQL
BEGIN;
SELECT tenantguard.set_context('$T');
INSERT INTO docs VALUES (1, 'acme', 'hello', tenantguard.encrypt('s3cret', 'docs.secret.1')), (2, 'acme', 'world', NULL);
COMMIT;
SQL
before=$(q postgres "SELECT count(*) FROM tenantguard.audit_log")
DUMP=$DIR/dump.pgc
"$BIN/pg_dump" -Fc -h "$SOCK" -p "$PORT" -U postgres -d dumpsrc -f "$DUMP" 2>"$DIR/dump.err"
check "pg_dump succeeds" test -s "$DUMP"
q postgres "CREATE DATABASE dumpdst" >/dev/null; DB=postgres
"$BIN/pg_restore" -h "$SOCK" -p "$PORT" -U postgres -d dumpdst "$DUMP" 2>"$DIR/restore.err"
check "pg_restore without errors" bash -c "! grep -q ERROR '$DIR/restore.err'"
DB=dumpdst
check "policies restored (5 on docs)" test "$(q postgres "SELECT count(*) FROM pg_policy WHERE polrelid = 'docs'::regclass AND polname LIKE 'tenantguard_%'")" = "5"
check "RLS enabled and forced" test "$(q postgres "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'docs'::regclass")" = "t"
check "audit triggers not doubled" test "$(q postgres "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND tgname LIKE 'tenantguard_audit%'")" = "2"
check "protection catalog restored" test "$(q postgres "SELECT count(*) FROM tenantguard.protected_table")" = "1"
check "authz model restored" test "$(q postgres "SELECT count(*) FROM tenantguard.authz_assignment")" = "1"
check "allowlists restored" test "$(q postgres "SELECT count(*) FROM tenantguard.ip_allowlist")" = "1"
check "audit records restored ($before)" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log")" = "$before"
check "audit chain verifies after restore" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
out=$(psql -X -q -At -h "$SOCK" -p "$PORT" -U app -d dumpdst 2>&1 <<SQL
BEGIN;
SELECT tenantguard.set_context('$T');
SELECT tenantguard.decrypt_text(secret, 'docs.secret.1') FROM docs WHERE id = 1;
SELECT tenantguard.authorize('doc:read');
SELECT count(*) FROM docs;
COMMIT;
SQL
)
check "ciphertext decrypts after restore (not double-encrypted)" bash -c "echo '$out' | grep -qx 's3cret'"
check "authorize works after restore" bash -c "echo '$out' | grep -qx 't'"
check "isolation holds after restore" bash -c "echo '$out' | tail -1 | grep -qx '2'"
DB=postgres
# The app role cannot borrow the restore exemption by naming itself pg_restore.
n0=$(DB=dumpdst q postgres "SELECT count(*) FROM tenantguard.audit_log")
PGAPPNAME=pg_restore psql -X -q -h "$SOCK" -p "$PORT" -U app -d dumpdst >/dev/null 2>&1 <<SQL
BEGIN;
SELECT tenantguard.set_context('$T');
INSERT INTO docs VALUES (3, 'acme', 'sneaky', NULL);
COMMIT;
SQL
n1=$(DB=dumpdst q postgres "SELECT count(*) FROM tenantguard.audit_log")
check "application_name=pg_restore does not silence audit for the app role" test "$n1" -gt "$n0"
