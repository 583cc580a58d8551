"""Programs over the client and the daemons: the ``gfs`` CLI, the local
cluster of ``make run``, the mount(8) helper, the fsx exerciser, the fuzzer."""
