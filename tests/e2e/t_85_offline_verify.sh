# The offline verifier checks an export against an earlier digest with no
# database: with the audit key every HMAC; without it sequence and links.
cargo build -q --release -p tenantguard-core --bin tg-verify-audit --target-dir target/verifier 2>/dev/null
V=target/verifier/release/tg-verify-audit
# Records of its own, so this test does not depend on what earlier tests wrote.
T85=$(q postgres "SELECT tenantguard.sign_context('{\"tid\":\"acme\",\"sub\":\"olga\",\"exp\":4000000000}')")
for n in 1 2 3; do
  q postgres "SELECT tenantguard.set_context('$T85') IS NULL; SELECT tenantguard.log_event('offline-check', 'doc', '$n', '{\"n\": $n}')" >/dev/null
done
q postgres "SELECT tenantguard.export_audit('acme')" > "$DIR/acme.jsonl"
q postgres "SELECT jsonb_agg(d) FROM tenantguard.audit_digest() d WHERE tenant = 'acme'" > "$DIR/digest.json"
grep '^tenantguard.audit_keys' "$DIR/data/postgresql.conf" | sed "s/^[^']*'\(.*\)'.*/\1/" > "$DIR/audit.keys"
check "export has records ($(wc -l < "$DIR/acme.jsonl"))" test "$(wc -l < "$DIR/acme.jsonl")" -ge 3
check "offline: intact export verifies with the key" "$V" "$DIR/acme.jsonl" "$DIR/digest.json" "$DIR/audit.keys"
check "offline: intact export verifies without the key (linkage)" "$V" "$DIR/acme.jsonl" "$DIR/digest.json"
# An edited record: caught with the key.
sed '2s/"action": "[^"]*"/"action": "FORGED"/' "$DIR/acme.jsonl" > "$DIR/edited.jsonl"
check "offline: an edited record fails with the key" bash -c "! '$V' '$DIR/edited.jsonl' '$DIR/digest.json' '$DIR/audit.keys' >/dev/null"
# A deleted record: caught with or without the key.
sed '2d' "$DIR/acme.jsonl" > "$DIR/deleted.jsonl"
check "offline: a deleted record fails without the key" bash -c "! '$V' '$DIR/deleted.jsonl' '$DIR/digest.json' >/dev/null"
# A truncated tail: the digest head is missing.
head -n 2 "$DIR/acme.jsonl" > "$DIR/short.jsonl"
check "offline: a truncated export fails against the digest" bash -c "! '$V' '$DIR/short.jsonl' '$DIR/digest.json' >/dev/null"
# The file's SHA-256 is the digest export_audit() recorded (what
# drop_audit_partition() later requires and checkpoints).
rec=$(q postgres "SELECT digest FROM tenantguard.audit_export WHERE tenant = 'acme' ORDER BY id DESC LIMIT 1")
check "export file sha256 = recorded export digest" test "$(sha256sum < "$DIR/acme.jsonl" | cut -d' ' -f1)" = "$rec"
check "offline verifier prints the same digest" bash -c "'$V' '$DIR/acme.jsonl' '$DIR/digest.json' | grep -q 'export sha256: $rec'"
# The auditor's functions are granted to tenantguard_admin (ops), who may
# not read the trail directly: they work for ops, with the same answers a
# superuser gets; the application role may not call them.
check "tenantguard_admin: verify_audit() answers as for a superuser" \
  test "$(q ops "SELECT string_agg(tenant || ':' || records || ':' || ok, ',' ORDER BY tenant) FROM tenantguard.verify_audit()")" = "$(q postgres "SELECT string_agg(tenant || ':' || records || ':' || ok, ',' ORDER BY tenant) FROM tenantguard.verify_audit()")"
check "tenantguard_admin: audit_digest() and verify_audit_against() agree" \
  test "$(q ops "SELECT bool_and(ok) FROM tenantguard.verify_audit_against((SELECT jsonb_agg(d) FROM tenantguard.audit_digest() d))")" = t
check "tenantguard_admin: export_audit() gives the same lines" \
  test "$(q ops "SELECT count(*) FROM tenantguard.export_audit('acme')")" = "$(wc -l < "$DIR/acme.jsonl")"
out=$(q_err app "SELECT count(*) FROM tenantguard.export_audit('acme')" 2>&1)
check "the app role may not export the trail" bash -c 'echo "$1" | grep -q "permission denied for function export_audit"' _ "$out"
