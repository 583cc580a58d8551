"""Chunk bytes on disk: the store (with its in-memory twin), the
on-disk layout, the checksum scrubber, and the replicas over the store
(order locks, verified reads, the corrupt-replica path)."""
