"""Replication: Raft groups (pysyncobj) made durable, multiplexed and readable linearizably."""
