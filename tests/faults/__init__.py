"""Fault injection: the broker killed and restarted, the database partitioned away."""
