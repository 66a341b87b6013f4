# Refused attempts leave a durable server-log line with a fixed prefix,
# although their transactions abort.
# Same header and payload, signature bytes changed in the middle.
sig=${ACME##*.}; mid=$(( ${#sig} / 2 )); c=${sig:$mid:1}; [ "$c" = "A" ] && r=B || r=A
forged="${ACME%.*}.${sig:0:$mid}$r${sig:$((mid+1))}"
before=$(grep -c 'tenantguard-alert:' "$LOG")
# (has_context() first, so the library is loaded and the check hook runs.)
q_err app "SELECT tenantguard.has_context(); SELECT set_config('tenantguard.context', '$forged', true);" >/dev/null
q_err app "SELECT tenantguard.begin_bypass(repeat('a',64), 'guess')" >/dev/null
sleep 0.3
check "forged token leaves a tenantguard-alert line" grep -q '"event":"context_refused".*"reason":"bad_signature"' "$LOG"
check "wrong bypass secret leaves a tenantguard-alert line" grep -q '"event":"bypass_refused"' "$LOG"
check "alert lines are JSON after the prefix" bash -c "grep -o 'tenantguard-alert: .*' '$LOG' | tail -1 | sed 's/^tenantguard-alert: //' | python3 -c 'import json,sys; json.load(sys.stdin)'"
after=$(grep -c 'tenantguard-alert:' "$LOG")
check "each refusal logged ($before -> $after)" test "$after" -ge $((before + 2))
