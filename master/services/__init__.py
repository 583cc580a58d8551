"""Background services over :class:`master.core.Master`: snapshots,
trash, re-replication, rebalancing, and the queries the web page,
the CLI and /metrics share. None of them imports the HTTP layer."""
