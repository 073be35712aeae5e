"""The interaction log: the store (:mod:`.storage`, with its reading, rating and job methods in
:mod:`.reading`, :mod:`.ratings`, :mod:`.joblog`), its SQLAlchemy models (:mod:`.schema`) and
error (:mod:`.errors`), one record per tier that ran (:mod:`.tiers`), the log that journals
while the database is away (:mod:`.durable`), its Alembic migrations (``migrations/``), and the
rule that turns a rating into correctness labels (:mod:`.labels`)."""

from .storage import StorageError, Store, open_store

__all__ = ["Store", "StorageError", "open_store"]
