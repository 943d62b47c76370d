"""Orchestration: shard plans, builds (CI executions) and the work queue of orchestrated runs."""
