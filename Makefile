# gfsfs — `make run` brings up a local cluster mounted at ./mnt; `make test` runs the suite.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: run test bootstrap bench clean-data

bootstrap:
	@bash .ci/bootstrap

run: bootstrap
	$(PY) -m gfsfs.localcluster

test:
	@bash .ci/bootstrap test
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: bootstrap
	$(PY) bench/bench.py

clean-data:
	@if grep -q " $(CURDIR)/mnt " /proc/mounts; then echo "unmount ./mnt first (stop make run)"; exit 1; fi
	rm -rf data/master data/chunks
