#!/usr/bin/env bash
# Build Citus 13.2.2 for Postgres 15 from ../shared/vendor (no registry ships
# it), cached under target/citus/, and install it atomically (each file
# written aside and renamed, as packaging/install.sh does: a running server
# keeps the library it mapped). Idempotent: a second run installs nothing
# unless the build changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# The vendored source: TG_VENDOR, else ../shared/vendor next to the
# checkout (or next to its parent: a clone in a subfolder), else the
# workspace's /work/shared/vendor.
VENDOR=""
for d in ${TG_VENDOR:-} "$ROOT/../shared/vendor" "$ROOT/../../shared/vendor" /work/shared/vendor; do
  if [ -f "$d/citus-13.2.2.tar.gz" ]; then VENDOR=$d; break; fi
done
[ -n "$VENDOR" ] || { echo "install_citus: citus-13.2.2.tar.gz not found in \$TG_VENDOR, ../shared/vendor or /work/shared/vendor (set TG_VENDOR to its folder)" >&2; exit 1; }
SRC_TGZ=$VENDOR/citus-13.2.2.tar.gz
PATCH=$VENDOR/citus-13.2.2-pg15.patch
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
CACHE=$ROOT/target/citus
BUILD=$CACHE/citus-13.2.2
need=""
for p in libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev libpam0g-dev libxslt1-dev libreadline-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  echo "install_citus: installing$need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
if [ ! -f "$CACHE/built.stamp" ]; then
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  tar -xzf "$SRC_TGZ" -C "$BUILD" --strip-components=1
  (cd "$BUILD" && patch -p1 -s <"$PATCH")
  (cd "$BUILD" && ./configure -q PG_CONFIG="$PG_CONFIG" >"$CACHE/configure.log" 2>&1) || { tail -20 "$CACHE/configure.log"; exit 1; }
  (cd "$BUILD" && make -s -j2 with_llvm=no >"$CACHE/make.log" 2>&1) || { tail -30 "$CACHE/make.log"; exit 1; }
  touch "$CACHE/built.stamp"
fi
STAGE=$CACHE/stage
rm -rf "$STAGE"
(cd "$BUILD" && make -s install with_llvm=no DESTDIR="$STAGE" >"$CACHE/install.log" 2>&1) || { tail -20 "$CACHE/install.log"; exit 1; }
n=0
while IFS= read -r -d '' f; do
  dest=${f#"$STAGE"}
  if ! cmp -s "$f" "$dest" 2>/dev/null; then
    mkdir -p "$(dirname "$dest")"
    cp "$f" "$dest.tg-new" && chmod 644 "$dest.tg-new" && mv -f "$dest.tg-new" "$dest"
    n=$((n + 1))
  fi
done < <(find "$STAGE" -type f -print0)
echo "citus 13.2.2: $n files installed for $("$PG_CONFIG" --version) (atomically)"
