"""Who may talk to a gfsfs daemon (issue 14, docs/security.md).

- :mod:`.secret`: the cluster secret file (``[cluster] secret_file``): made by
  ``gfs secret init``, mode 0600, one key per line (the first signs, every one
  verifies: how a secret is rotated without downtime).
- :mod:`.hmac`: every request between daemons, and from mounts and tools,
  carries an HMAC-SHA256 over its method, target, body digest, a timestamp and a
  nonce; the server refuses a missing, wrong, stale or replayed one with 401.
- :mod:`.tokens`: chunk access tokens (HDFS block tokens): the master hands a
  short-lived token naming a chunk, its version, the access and an expiry with
  every location and lease; a chunkd serves a chunk only against one.
"""
