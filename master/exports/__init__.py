"""Exports: who may mount which subtree, read-only or not, with root squashed
or not (the rules), and what a mount's session may do (the guard)."""
