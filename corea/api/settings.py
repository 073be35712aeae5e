"""The API's settings, read from ``COREA_API_*`` environment variables (pydantic-settings).

| variable | default | meaning |
| --- | --- | --- |
| ``COREA_API_KEYS`` | — | comma-separated keys, each ``key`` or ``name=key`` |
| ``COREA_API_KEY_FILE`` | — | one key a line (``key`` or ``name key``; ``#`` comments) |
| ``COREA_API_RATE_PER_MINUTE`` | ``60`` | requests per key per rolling minute |
| ``COREA_API_MAX_CONCURRENT`` | ``4`` | requests in flight per key |
| ``COREA_API_MAX_CONCURRENT_TOTAL`` | ``16`` | requests in flight over all keys |
| ``COREA_API_MAX_BODY_BYTES`` | ``1000000`` | largest accepted request body |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Keys and limits of the API server (see the module docstring for the variables).

    Attributes:
        keys: API keys given directly, comma-separated, each ``key`` or ``name=key``. Never
            logged; a key's id (its name, or ``key-`` and 8 hex digits of its SHA-256) is.
        key_file: a file of keys, one a line: ``key`` or ``name key``; blank lines and ``#``
            comments are skipped.
        rate_per_minute: requests one key may start per rolling 60 s (0 = unlimited).
        max_concurrent: requests of one key in flight at once.
        max_concurrent_total: requests in flight over all keys.
        max_body_bytes: the largest request body accepted (413 beyond).
    """

    model_config = SettingsConfigDict(env_prefix="COREA_API_", extra="ignore")

    keys: str = ""
    key_file: Path | None = None
    rate_per_minute: int = Field(60, ge=0)
    max_concurrent: int = Field(4, gt=0)
    max_concurrent_total: int = Field(16, gt=0)
    max_body_bytes: int = Field(1_000_000, gt=0)
