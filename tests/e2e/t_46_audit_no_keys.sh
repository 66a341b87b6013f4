# Without audit keys, an audited write is refused (55000) rather than left
# unrecorded: the application role's row is not written either. Checked
# when the row is captured, not only when the records are written at commit.
q postgres "ALTER SYSTEM SET tenantguard.audit_keys = ''" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO t VALUES (46, 'acme'); SELECT 'after the insert'; COMMIT;" 2>&1)
check "no audit keys: an audited write by the app role is refused at the INSERT" bash -c 'echo "$1" | grep -q "no audit keys configured" && ! echo "$1" | grep -q "after the insert"' _ "$out"
check "no audit keys: the row was not written" test "$(q postgres "SELECT count(*) FROM t WHERE id = 46")" = 0
q postgres "ALTER SYSTEM RESET tenantguard.audit_keys" >/dev/null
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q app "BEGIN; SELECT tenantguard.set_context('$ACME'); INSERT INTO t VALUES (46, 'acme'); COMMIT;" >/dev/null
check "keys back: the write and its record are there" test "$(q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.t' AND row_key ->> 'id' = '46'")" = 1
