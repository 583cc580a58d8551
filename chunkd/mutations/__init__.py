"""Data flow and mutation order: push buffers forwarded down the chain,
and the primary/secondary logic of writes and record appends."""
