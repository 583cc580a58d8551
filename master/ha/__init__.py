"""High availability (docs/ha.md): shadow masters that follow the primary's op
log, synchronous shipping, epochs and promotion, failover through etcd."""
