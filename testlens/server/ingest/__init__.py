"""Ingest: reading an upload (:mod:`.form`), storing it (:mod:`.service`, :mod:`.queries`) and
folding it into each test's state (:mod:`.detection`)."""
