#!/usr/bin/env bash
# Build the extension for one Postgres major version and install it
# atomically:   PG=15|16|18 packaging/install.sh [--debug]
#               PG=15 packaging/install.sh --from DIR   (a tree cargo pgrx package built)
# `cargo pgrx install` rewrites the library in place, and a running server
# that has it mapped dies (SIGBUS/SIGSEGV). Here every file is written next
# to its destination and renamed over it: a running backend keeps the old
# file it mapped, new backends load the new one, nothing sees half a file.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TG_ROOT=$ROOT; . tests/lib/pg.sh
[ -x "$PG_CONFIG" ] || { echo "install.sh: Postgres $PG is not installed (make deps)" >&2; exit 1; }
if [ "${1:-}" = "--from" ]; then
  OUT=${2:?directory}
else
  OUT=$ROOT/target/package/pg$PG
  rm -rf "$OUT"
  cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$OUT" ${1:+"$1"} >&2
fi
n=0
while IFS= read -r -d '' f; do
  rel=${f#"$OUT"}
  dst=$rel
  mode=0644; case "$dst" in *.so) mode=0755 ;; esac
  tmp=$(dirname "$dst")/.$(basename "$dst").tg-new.$$
  install -D -m "$mode" "$f" "$tmp"
  mv -f "$tmp" "$dst"
  n=$((n+1))
done < <(find "$OUT" -type f -print0)
echo "installed $n files for Postgres $PG (atomically: written aside, renamed into place)"
