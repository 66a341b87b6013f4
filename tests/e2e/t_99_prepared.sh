# Two-phase commit: a transaction that appends more records than move the
# chain head brings the head up to its last record before PREPARE, so the
# prepared state (and COMMIT PREPARED from another session) is consistent;
# ROLLBACK PREPARED leaves the chain as it was. The next transaction of the
# same backend starts clean.
DB=postgres
q postgres "CREATE TABLE twopc (id bigserial PRIMARY KEY, tenant_id text NOT NULL, v int);
  SELECT count(*) FROM tenantguard.protect('twopc');
  GRANT SELECT, INSERT ON twopc TO app; GRANT USAGE ON SEQUENCE twopc_id_seq TO app;" >/dev/null
head_ok() {
  test "$(q postgres "SELECT h.seq = (SELECT max(seq) FROM tenantguard.audit_log WHERE tenant = 'acme')
                          AND h.hash = (SELECT hash FROM tenantguard.audit_log WHERE tenant = 'acme' ORDER BY seq DESC LIMIT 1)
                     FROM tenantguard.audit_head h WHERE h.tenant = 'acme'")" = "t"
}
GLOBEX_2PC=$(tok '{"tid":"globex","sub":"gus","exp":4000000000,"iat":1700000000}')
before=$(q postgres "SELECT seq FROM tenantguard.audit_head WHERE tenant = 'acme'")
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO twopc (v) SELECT g FROM generate_series(1, 30) g;
       PREPARE TRANSACTION 'tg_2pc_commit';
       BEGIN; SELECT tenantguard.set_context('$GLOBEX_2PC'); INSERT INTO twopc (v) VALUES (-1); COMMIT;" >/dev/null 2>"$DIR/2pc.err"
check "PREPARE TRANSACTION of 30 audited rows works, and the session's next transaction appends (another tenant: the prepared one keeps acme's head locked)" test ! -s "$DIR/2pc.err"
q postgres "COMMIT PREPARED 'tg_2pc_commit'" >/dev/null
check "after COMMIT PREPARED the head is the last record" head_ok
check "30 records were added" test "$(q postgres "SELECT seq - $before FROM tenantguard.audit_head WHERE tenant = 'acme'")" = "30"
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO twopc (v) SELECT g FROM generate_series(1, 30) g;
       PREPARE TRANSACTION 'tg_2pc_rollback';" >/dev/null
q postgres "ROLLBACK PREPARED 'tg_2pc_rollback'" >/dev/null
check "after ROLLBACK PREPARED the head is still the last record" head_ok
check "and the chains verify" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
