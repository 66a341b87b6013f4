# pg_tenantguard: every target installs what it needs, idempotently.
#   make demo          build, install, start a throwaway cluster, run the scenario
#   make test          the whole suite on every major version (15, 16, 18)
#   make test PG=18    the suite on one major version
#   make install       build and install atomically into Postgres $(PG)
#   make package       Debian packages, one per major version
#   make bench         benchmarks, printed as ratios against baselines
PG ?= 15
VERSIONS ?= 15 16 18
# Debian's Postgres 15; 16 and 18 come from PyPI wheels (tests/lib/pg.sh).
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION := 0.18.0
PG_PACKAGES := postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pgbouncer
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: deps install install-debug package demo test test-unit test-pgrx test-regress test-e2e bench soak clean

deps:
	@missing=""; for p in $(PG_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if ! cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)"; then \
	  echo "installing cargo-pgrx $(PGRX_VERSION) (a few minutes)"; \
	  $(CARGO) install cargo-pgrx --version $(PGRX_VERSION) --locked; \
	fi
	@for v in $(VERSIONS); do bash tests/lib/install_pg.sh $$v || exit 1; done
	@args=""; ok=1; for v in $(VERSIONS); do \
	  c=$$(PG=$$v bash -c '. tests/lib/pg.sh && echo $$PG_CONFIG'); args="$$args --pg$$v $$c"; \
	  grep -qs "^pg$$v = \"$$c\"" $(HOME)/.pgrx/config.toml || ok=0; \
	done; \
	if [ $$ok = 0 ]; then cargo pgrx init $$args >/dev/null; fi

install: deps
	PG=$(PG) bash packaging/install.sh

# Faster build for development loops.
install-debug: deps
	PG=$(PG) bash packaging/install.sh --debug

demo: install
	bash examples/demo.sh

# `make test PG=18` runs one version; plain `make test` runs them all.
test: deps
	TG_VERSIONS="$(if $(filter command line,$(origin PG)),$(PG),$(VERSIONS))" bash tests/run_all.sh

test-unit:
	$(CARGO) test -p tenantguard-core

test-pgrx: deps
	PG=$(PG) bash tests/run_pgrx.sh

test-regress: install
	PG=$(PG) bash tests/run_regress.sh

test-e2e: install
	PG=$(PG) bash tests/e2e/run.sh

# Debian packages, one per major version (target/deb/*.deb).
package: deps
	@for v in $(VERSIONS); do PG=$$v bash packaging/deb.sh || exit 1; done

bench: install
	PG=$(PG) bash benches/run.sh

soak: install
	TG_SOAK=long bash tests/soak/run_pooler.sh
	TG_SOAK=long bash tests/soak/crash.sh

clean:
	bash tests/lib/cluster.sh clean
	rm -rf target/regress-out
