"""Byte formats: RocketMQ's store files and mqtier's own. Pure functions over bytes, no I/O."""
