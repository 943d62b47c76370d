"""The HTTP service: app factory, database, auth and one module per API area."""
