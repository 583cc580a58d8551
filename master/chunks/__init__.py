"""Chunks and chunkds: the registry of replicas and chunkd liveness, and
the lease manager (primaries, versions)."""
