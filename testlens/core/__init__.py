"""Pure logic with no I/O: report parsing, flakiness, durations, sharding.

Nothing here imports from ``testlens.server`` or ``testlens.client``.
"""
