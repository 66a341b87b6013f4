#!/usr/bin/env bash
# A Debian package of the extension for one Postgres major version:
#   PG=15|16|18 packaging/deb.sh [--revision N]
#   -> target/deb/postgresql-<major>-tenantguard_<version>[-N]_amd64.deb
# Files land where Debian's (and the PGDG's) postgresql-<major> looks for
# them: /usr/lib/postgresql/<major>/lib and /usr/share/postgresql/<major>/extension,
# whatever layout the build's own pg_config has (16 and 18 build against
# the PyPI wheels' headers; the ABI is that of the major version). dpkg
# unpacks each file beside its destination and renames it into place, so a
# running server keeps the library it mapped.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TG_ROOT=$ROOT; . tests/lib/pg.sh
REV=""
[ "${1:-}" = "--revision" ] && REV="-${2:?revision}"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
NAME=postgresql-$PG-tenantguard
OUT=$ROOT/target/package/pg$PG
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$OUT" >&2
LIB=$("$PG_CONFIG" --pkglibdir); EXT=$("$PG_CONFIG" --sharedir)/extension
STAGE=$ROOT/target/deb/${NAME}_$VERSION$REV
rm -rf "$STAGE"; mkdir -p "$STAGE/DEBIAN" "$STAGE/usr/lib/postgresql/$PG/lib" "$STAGE/usr/share/postgresql/$PG/extension"
install -m 0755 "$OUT$LIB/pg_tenantguard.so" "$STAGE/usr/lib/postgresql/$PG/lib/"
for f in "$OUT$EXT"/pg_tenantguard*; do install -m 0644 "$f" "$STAGE/usr/share/postgresql/$PG/extension/"; done
SIZE=$(du -sk "$STAGE/usr" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: $NAME
Version: $VERSION$REV
Architecture: amd64
Maintainer: pg_tenantguard developers <tenantguard@localhost>
Depends: postgresql-$PG, libc6 (>= 2.34)
Section: database
Priority: optional
Installed-Size: $SIZE
Description: tenant isolation enforced by PostgreSQL $PG
 pg_tenantguard makes every row of a multi-tenant table reachable only by a
 transaction that has proved, with a signed token, which tenant it acts for.
 After installing: shared_preload_libraries = 'pg_tenantguard', signing keys
 in postgresql.conf, CREATE EXTENSION pg_tenantguard (or ALTER EXTENSION
 pg_tenantguard UPDATE after an upgrade).
CONTROL
mkdir -p "$ROOT/target/deb"
DEB=$ROOT/target/deb/${NAME}_$VERSION${REV}_amd64.deb
dpkg-deb --build --root-owner-group "$STAGE" "$DEB" >/dev/null
echo "$DEB"
