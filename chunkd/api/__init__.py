"""The chunkd's HTTP face (routing only), /metrics and the short-circuit
socket for local readers."""
