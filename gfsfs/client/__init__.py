"""The client library: master and chunkd stubs, caches, the write and
append paths, short-circuit reads, and the public API (``gfsfs.connect``,
the ``gfs://`` fsspec file system). Knows nothing of FUSE."""
