"""Retention: how long each tenant keeps its history, and the sweeper that enforces it.

A tenant's policy (``GET``/``PUT /api/retention``, :mod:`.endpoints`) overrides the server's
``TESTLENS_RETENTION_*`` defaults field by field. A background worker in every server process
(:mod:`.tasks`) sweeps every tenant each ``TESTLENS_RETENTION_SWEEP_SECONDS``: results older
than their retention, then runs older than theirs that have no results left, state changes
and finished webhook deliveries. What the API reads at every request (each test's state and
figures, duration samples, daily rollups and so trends, quarantines) is never swept.

Every deletion is a run of short transactions of at most a batch of rows each, oldest
first (:mod:`.queries`): on SQLite a transaction holds the one write lock, and uploads must
keep flowing while years of history go. Deleting a repository (``DELETE
/api/repos/{owner}/{name}``) goes the same way, table by table, the repository row last, so a
deletion cut short is finished by asking again.
"""
