"""Shared plumbing of every gfsfs process: the wire (msgpack RPC over HTTP,
the h11 server), error codes, the protocol's constants and messages,
config, logs, metrics, input validation."""
