# jitportal: `make run` starts the demo portal, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/jitportal

.PHONY: run test venv system-deps benchmark-expiry clean

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

run: $(STAMP)
	$(PY) -m jitportal.run

test: $(STAMP) system-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q

benchmark-expiry: $(STAMP) system-deps
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) benchmarks/expiry_lag.py $(ARGS)

clean:
	rm -rf $(VENV) var
