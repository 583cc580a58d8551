"""The master's HTTP face: the RPC table, the web page, /metrics."""
