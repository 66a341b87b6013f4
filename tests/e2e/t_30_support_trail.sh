# Every statement run under a staff support grant is recorded with the
# grant's reason.
JOE=$(tok '{"tid":"acme","sub":"staff-joe","staff":true,"exp":4000000000,"iat":1700000000}')
q ops "SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'INC-7 export fails', now() + interval '1 hour')" >/dev/null
psql -X -q -h "$SOCK" -p "$PORT" -U app -d postgres >/dev/null <<SQL
BEGIN;
SELECT tenantguard.set_context('$JOE');
SELECT count(*) FROM t /* stmt-one */;
SELECT id FROM t /* stmt-two */;
COMMIT;
SQL
sleep 0.3
support_line() { grep '"event":"support_access_used"' "$LOG" | grep 'INC-7 export fails' | grep -q "$1"; }
check "support statement one recorded with reason" support_line stmt-one
check "support statement two recorded with reason" support_line stmt-two
