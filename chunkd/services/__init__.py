"""Work ordered by the master: heartbeats and chunk reports, re-replication
copies, snapshot copy-on-write."""
