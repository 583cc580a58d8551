"""The master's durable state: the namespace state machine, the op-log
records (one schema), the op log, checkpoints (images), permissions."""
