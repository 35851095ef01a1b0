"""Parallelism: the device mesh and logical-axis sharding rules (sharding), and multi-process
initialization and batching (distributed)."""
