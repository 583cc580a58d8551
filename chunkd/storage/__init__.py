"""Chunk bytes on disk: the store (with its in-memory twin), the
on-disk layout, and the checksum scrubber."""
