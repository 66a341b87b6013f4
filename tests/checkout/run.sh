#!/usr/bin/env bash
# A new user's first steps, from where a new user keeps a checkout.
#  1. `make demo` from a copy of this tree inside a 0700 directory (as
#     `mktemp -d` and root's home are): the clusters run as the postgres OS
#     user, which cannot enter that directory.
#  2. A cluster that cannot start says why in one line: a port in use, and a
#     runtime directory the postgres user cannot reach.
# The copy builds into this checkout's target/ (CARGO_TARGET_DIR), so the
# release build is shared with the rest of the suite.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
pass=0; fail=0
ok()  { pass=$((pass+1)); echo "ok   - $1"; }
bad() { fail=$((fail+1)); echo "FAIL - $1"; }
PRIV=$(mktemp -d)   # mode 0700, owned by root
trap 'rm -rf "$PRIV"' EXIT
[ "$(stat -c %a "$PRIV")" = 700 ] && ok "the parent directory is private (0700)" || bad "mktemp -d is not 0700"

# --- 1. make demo from a private checkout
# (the tree as it stands: tracked and untracked files git does not ignore)
COPY=$PRIV/p/pg_tenantguard; mkdir -p "$COPY"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -- {} "$COPY"/ 2>/dev/null
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [ -e "$COPY/$f" ] || [ ! -e "$f" ] || echo "missing $f"; done | head -3
log=$ROOT/target/checkout-demo.log
if CARGO_TARGET_DIR=$ROOT/target TG_DEMO_PORT=${TG_CHECKOUT_PORT:-55470} make -C "$COPY" demo >"$log" 2>&1; then
  ok "make demo passes from a checkout in a 0700 directory"
else
  bad "make demo from a checkout in a 0700 directory failed; last lines of $log:"; tail -n 25 "$log" | sed 's/^/     /'
fi
grep -q "Demo complete" "$log" 2>/dev/null && ok "the demo ran to its last step" || bad "the demo did not reach its last step"
bash "$COPY/tests/lib/cluster.sh" clean >/dev/null 2>&1

# --- 2. failures say why, in one line
P=${TG_CHECKOUT_PORT:-55470}
python3 -c 'import socket,sys,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(30)' "$P" &
holder=$!; sleep 0.5
err=$(tests/lib/cluster.sh start probe "$P" 2>&1 >/dev/null); rc=$?
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] && printf '%s' "$err" | grep -q "port $P is already in use"; then
  ok "a port in use: refused with one line ($err)"
else
  bad "a port in use: rc=$rc, said: $err"
fi
err=$(TG_RUNTIME_DIR=$PRIV/rt tests/lib/cluster.sh start probe "$P" 2>&1 >/dev/null); rc=$?
first=$(printf '%s\n' "$err" | head -n 1)
if [ $rc -ne 0 ] && printf '%s' "$first" | grep -q "postgres OS user cannot enter $PRIV"; then
  ok "a runtime directory postgres cannot reach: refused with the reason ($first)"
else
  bad "an unreachable runtime directory: rc=$rc, said: $err"
fi
# a server that refuses its configuration: the reason from server.log and where to look
err=$(CLUSTER_EXTRA_CONF="shared_buffers = '999TB'" tests/lib/cluster.sh start probe "$P" 2>&1 >/dev/null); rc=$?
first=$(printf '%s\n' "$err" | head -n 1)
if [ $rc -ne 0 ] && printf '%s' "$first" | grep -q "cluster 'probe' did not start on port $P: .*shared_buffers" \
   && printf '%s' "$err" | grep -q "look further"; then
  ok "a server that does not start: the reason in one line, then the log and where to look ($first)"
else
  bad "a server that does not start: rc=$rc, said: $err"
fi
tests/lib/cluster.sh stop probe >/dev/null 2>&1 || true
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
