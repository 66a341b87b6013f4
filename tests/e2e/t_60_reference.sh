# docs/reference.md documents every function of the extension.
missing=""
for f in $(q postgres "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'tenantguard'::regnamespace ORDER BY 1"); do
  grep -qE "\`$f\(" docs/reference.md || missing="$missing $f"
done
check "every extension function is in docs/reference.md${missing:+ (missing:$missing)}" test -z "$missing"
gucs_missing=""
for g in $(q postgres "SELECT name FROM pg_settings WHERE name LIKE 'tenantguard.%' UNION SELECT 'tenantguard.signing_keys' UNION SELECT 'tenantguard.audit_keys' UNION SELECT 'tenantguard.master_key'"); do
  grep -qF "\`$g\`" docs/reference.md || gucs_missing="$gucs_missing $g"
done
check "every GUC is in docs/reference.md${gucs_missing:+ (missing:$gucs_missing)}" test -z "$gucs_missing"
