"""The interaction log: SQLAlchemy models and the store (:mod:`.storage`), its Alembic migrations
(``migrations/``), and the rule that turns a rating into correctness labels (:mod:`.labels`)."""

from .storage import StorageError, Store, open_store

__all__ = ["Store", "StorageError", "open_store"]
