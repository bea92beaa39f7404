"""The hot store: RocketMQ-compatible files on local disk, group-committed appends, recovery."""
