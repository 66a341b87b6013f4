# Sourced by the upgrade tests (after tests/e2e/lib.sh, with SOCK/PORT set):
# a database full of state, and the checks that every guarantee over it
# still holds, as the application role.
#   populate_state        as superuser, in database $DB
#   check_state LABEL     the checks (ok/fail lines)
tok() { q postgres "SELECT tenantguard.sign_context('$1'::jsonb)"; }
populate_state() {
  q postgres "CREATE EXTENSION IF NOT EXISTS pg_tenantguard" >/dev/null 2>&1
  q postgres "CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS; CREATE ROLE ops LOGIN IN ROLE tenantguard_admin;
    CREATE ROLE gowner LOGIN;" >/dev/null
  q postgres "
    CREATE TABLE orders (id int PRIMARY KEY, tenant_id text NOT NULL, amount int);
    SELECT count(*) FROM tenantguard.protect('orders');
    CREATE TABLE secrets (id int PRIMARY KEY, tenant_id text NOT NULL, secret bytea);
    SELECT count(*) FROM tenantguard.protect('secrets');
    GRANT SELECT, INSERT, UPDATE, DELETE ON orders, secrets TO app;
    CREATE SCHEMA g; GRANT USAGE, CREATE ON SCHEMA g TO gowner; SELECT tenantguard.guard_schema('g');" >/dev/null
  q gowner "CREATE TABLE g.notes (id int PRIMARY KEY, tenant_id text NOT NULL)" >/dev/null
  ACME=$(tok '{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}')
  GLOBEX=$(tok '{"tid":"globex","sub":"gus","exp":4000000000,"iat":1700000000}')
  MALLORY=$(tok '{"tid":"acme","sub":"mallory","exp":4000000000,"iat":1700000000}')
  STAFF=$(tok '{"tid":"acme","sub":"staff-joe","staff":true,"exp":4000000000,"iat":1700000000}')
  for i in 1 2 3; do
    q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO orders VALUES ($i, 'acme', $i * 10);
      INSERT INTO secrets VALUES ($i, 'acme', tenantguard.encrypt('acme secret $i', 'secrets.$i')); COMMIT;" >/dev/null
    q app "BEGIN; SELECT tenantguard.set_context('$GLOBEX'); INSERT INTO orders VALUES (10$i, 'globex', $i);
      INSERT INTO secrets VALUES (10$i, 'globex', tenantguard.encrypt('globex secret $i', 'secrets.10$i')); COMMIT;" >/dev/null
  done
  # The other audit mode: chained by the background writer (needs preload).
  q postgres "SET tenantguard.audit_background = on; BEGIN; SELECT tenantguard.set_context('$ACME');
    UPDATE orders SET amount = amount + 1 WHERE id = 1; SELECT tenantguard.log_event('export', 'report', '7', '{\"rows\": 3}'); COMMIT;" >/dev/null
  q ops "SELECT tenantguard.revoke_user('acme', 'mallory');
    SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'ticket 42', now() + interval '1 day');
    SELECT tenantguard.create_role('acme', 'approver');
    SELECT tenantguard.grant_permission('acme', 'approver', 'order:approve', 'resource.amount <= 20');
    SELECT tenantguard.assign_role('acme', 'alice', 'approver');" >/dev/null
  sleep 1; q postgres "SELECT tenantguard.audit_flush()" >/dev/null
  q postgres "SELECT count(*) FROM tenantguard.verify_audit()" >/dev/null
}
check_state() { local l=$1 out
  ACME=$(tok '{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}')
  MALLORY=$(tok '{"tid":"acme","sub":"mallory","exp":4000000000,"iat":1700000000}')
  STAFF=$(tok '{"tid":"acme","sub":"staff-joe","staff":true,"exp":4000000000,"iat":1700000000}')
  check "$l: the app sees exactly its tenant's rows" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME'); SELECT string_agg(id::text, ',' ORDER BY id) FROM orders; COMMIT;" | tail -1)" = "1,2,3"
  out=$(q_err app "SELECT count(*) FROM orders" 2>&1)
  check "$l: without a context, protected tables fail closed" has "$out" 'no tenant context'
  out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO orders VALUES (99, 'globex', 1); COMMIT;" 2>&1)
  check "$l: writing another tenant's row is refused" has "$out" 'row-level security'
  out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$MALLORY'); SELECT count(*) FROM orders; COMMIT;" 2>&1)
  check "$l: the revocation still applies" has "$out" 'revoked'
  check "$l: the support window still admits the staff token" test "$(q app "BEGIN; SELECT tenantguard.set_context('$STAFF'); SELECT count(*) FROM orders; COMMIT;" 2>/dev/null | tail -1)" = "3"
  check "$l: ciphertexts decrypt for their tenant" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME'); SELECT tenantguard.decrypt_text(secret, 'secrets.' || id) FROM secrets WHERE id = 2; COMMIT;" | tail -1)" = "acme secret 2"
  out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); SELECT tenantguard.decrypt_text(tenantguard.encrypt('x', 'a'), 'b'); COMMIT;" 2>&1)
  check "$l: a ciphertext with the wrong aad does not decrypt" has "$out" 'decryption failed'
  check "$l: authorize() decides as before (20 yes, 30 no)" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME'); SELECT tenantguard.authorize('order:approve', '{\"amount\": 20}')::text || tenantguard.authorize('order:approve', '{\"amount\": 30}')::text; COMMIT;" | tail -1)" = "truefalse"
  check "$l: every audit chain verifies (both modes)" test "$(q ops "SELECT bool_and(ok) AND count(*) >= 2 FROM tenantguard.verify_audit()")" = "t"
  check "$l: the background-chained records are in the trail" test "$(q ops "SELECT count(*) > 0 FROM tenantguard.export_audit('acme') e WHERE e::text LIKE '%event:export%'")" = "t"
  out=$(q_err gowner "DROP POLICY tenantguard_select ON g.notes" 2>&1)
  check "$l: the guarded schema still refuses the owner's DROP POLICY" has "$out" 'is refused'
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO orders VALUES (50, 'acme', 5); COMMIT;" >/dev/null
  check "$l: new audited writes chain onto the old chains" test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
  q app "BEGIN; SELECT tenantguard.set_context('$ACME'); DELETE FROM orders WHERE id = 50; COMMIT;" >/dev/null
}
