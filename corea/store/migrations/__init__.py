"""Alembic migrations of the interaction log (run by :class:`corea.store.Store`)."""
