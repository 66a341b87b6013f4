# pg_tenantguard: every target installs what it needs, idempotently.
#   make demo    build, install, start a throwaway cluster, run the scenario
#   make test    the whole suite (unit, pg_test, pg_regress, isolation, e2e)
#   make bench   benchmarks, printed as ratios against baselines
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION := 0.18.0
PG_PACKAGES := postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pgbouncer
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: deps install install-debug demo test test-unit test-pgrx test-regress test-e2e bench soak clean

deps:
	@missing=""; for p in $(PG_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if ! cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)"; then \
	  echo "installing cargo-pgrx $(PGRX_VERSION) (a few minutes)"; \
	  $(CARGO) install cargo-pgrx --version $(PGRX_VERSION) --locked; \
	fi
	@if ! grep -qs '^pg15 = "$(PG_CONFIG)"' $(HOME)/.pgrx/config.toml; then \
	  cargo pgrx init --pg15 $(PG_CONFIG); \
	fi

install: deps
	cargo pgrx install --release --pg-config $(PG_CONFIG)

# Faster build for development loops.
install-debug: deps
	cargo pgrx install --pg-config $(PG_CONFIG)

demo: install
	bash examples/demo.sh

test: deps
	bash tests/run_all.sh

test-unit:
	$(CARGO) test -p tenantguard-core

test-pgrx: deps
	bash tests/run_pgrx.sh

test-regress: install
	bash tests/run_regress.sh

test-e2e: install
	bash tests/e2e/run.sh

bench: install
	bash benches/run.sh

soak: install
	TG_SOAK=long bash tests/soak/run_pooler.sh
	TG_SOAK=long bash tests/soak/crash.sh

clean:
	bash tests/lib/cluster.sh clean
	rm -rf target/regress-out
