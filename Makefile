# gfsfs — `make run` brings up a local cluster mounted at ./mnt; `make test` runs the suite.
PY := .venv/bin/python
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: run run-ha test test-unit soak bootstrap bench clean-data install-helper uninstall-helper install-systemd

bootstrap:
	@bash .ci/bootstrap

# RUN_ARGS: e.g. --max-deaths 10 --restart-backoff 2 (python -m gfsfs.tools.localcluster --help)
run: bootstrap
	$(PY) -m gfsfs.tools.localcluster $(RUN_ARGS)

# etcd, a primary and two shadow masters (failover through etcd), 3 chunkds, ./mnt (docs/ha.md)
run-ha:
	@bash .ci/bootstrap ha
	$(PY) -m gfsfs.tools.localha $(RUN_ARGS)

# the 20 slowest tests are listed at the end (the suite must stay under 15 min)
test:
	@bash .ci/bootstrap test
	$(PY) -m pytest -q --durations=20 $(PYTEST_ARGS) tests

# the fast tiers (pure logic; HTTP apps in-process): seconds, no daemons, no mount
test-unit:
	@bash .ci/bootstrap test
	$(PY) -m pytest -q $(PYTEST_ARGS) tests/unit tests/http

# long randomized runs of gfs-fsx (gfsfs/tools/fsx.py) on a cluster of its own with two
# mounts: every seed with and without mmap, remounting now and then
SOAK_OPS ?= 1000000
SOAK_SEEDS ?= 1,2,3
# ... and gfs-fuzz (gfsfs/tools/fuzz.py): FUZZ_COUNT hostile requests at every route of
# a cluster of its own; fails on any 5xx other than UNAVAILABLE, or a traceback
FUZZ_COUNT ?= 100000
soak: bootstrap
	@bash .ci/bootstrap test
	$(PY) -m gfsfs.tools.fuzz --seed 1 --count $(FUZZ_COUNT) --progress 10000
	$(PY) -m gfsfs.tools.fsx --cluster --seeds $(SOAK_SEEDS) --ops $(SOAK_OPS) --both-modes \
		--remount-every 50000 --progress 10000
	# kill -9 of the elected primary during a 1 GiB cp and two mounts' creates
	GFS_HA_CP_BYTES=1073741824 $(PY) -m pytest -q -s tests/ha/test_failover_mount.py

bench:
	@bash .ci/bootstrap ha
	$(PY) bench/bench.py
	$(PY) bench/fuse_floor.py
	$(PY) bench/failover.py
	$(PY) bench/auth.py

clean-data:
	@if grep -q " $(CURDIR)/mnt " /proc/mounts; then echo "unmount ./mnt first (stop make run)"; exit 1; fi
	rm -rf data/master data/chunks

# mount(8) helper: afterwards `mount -t fuse.gfsfs URL DIR` and fstab lines of type
# fuse.gfsfs work (see docs/operations.md). As root.
install-helper: bootstrap
	ln -sfn $(CURDIR)/.venv/bin/mount.fuse.gfsfs /sbin/mount.fuse.gfsfs

uninstall-helper:
	@if [ "$$(readlink /sbin/mount.fuse.gfsfs)" = "$(CURDIR)/.venv/bin/mount.fuse.gfsfs" ]; then \
		rm -f /sbin/mount.fuse.gfsfs; else echo "/sbin/mount.fuse.gfsfs is not ours; left alone"; fi

# systemd units into /etc/systemd/system (edit the paths in them first if gfsfs
# does not live in /opt/gfsfs; see docs/operations.md).
install-systemd:
	install -m 644 configs/systemd/gfs-master.service configs/systemd/gfs-chunkd@.service \
		configs/systemd/mnt-gfs.mount /etc/systemd/system/
	systemctl daemon-reload
