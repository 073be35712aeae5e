"""The OpenAI-compatible HTTP API: ``POST /v1/chat/completions`` (streamed or not), ``GET
/v1/models`` and ``POST /v1/corea/ratings``, a thin face over
:meth:`corea.service.CoreaService.ask`.

- :mod:`.settings`: the API's settings (keys, limits), from ``COREA_API_*`` variables.
- :mod:`.schemas`: requests and responses in OpenAI's schema, plus the ``corea`` object.
- :mod:`.auth`: bearer keys, per-key request rate and concurrency caps.
- :mod:`.access`: who may call (bearer key or loopback only) and the size-capped JSON body.
- :mod:`.catalog`, :mod:`.chat`, :mod:`.ratings`: the routes of ``/v1/models``,
  ``/v1/chat/completions`` and ``/v1/corea/ratings``.
- :mod:`.app`: :func:`create_api`, the FastAPI app (``corea serve``; ``python app.py`` mounts the
  web UI on the same app).
"""

from .app import create_api
from .settings import ApiSettings

__all__ = ["ApiSettings", "create_api"]
