"""``corea serve``: the cascade as an OpenAI-compatible API.

Point any OpenAI client at ``http://HOST:PORT/v1`` and ask the model ``corea`` (the configured
τ) or ``corea:0.8`` (τ = 0.8). Keys come from ``COREA_API_KEYS`` (comma-separated, ``key`` or
``name=key``) or ``COREA_API_KEY_FILE``; without keys the server listens on 127.0.0.1 only and
says so. Limits: ``COREA_API_RATE_PER_MINUTE``, ``COREA_API_MAX_CONCURRENT`` (per key),
``COREA_API_MAX_CONCURRENT_TOTAL``. See docs/api.md.
Exit status: 0 stopped, 2 bad settings or a refused address.
"""

from __future__ import annotations

import argparse
import sys

HELP = "serve the cascade as an OpenAI-compatible API (/v1/chat/completions)"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea serve`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea serve", description=HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; another needs API keys)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--config", default=None, help="YAML settings file")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    return p


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (exit status as in the module docstring)."""
    from pydantic import ValidationError

    from ..api import ApiSettings, create_api
    from ..api.auth import KeyConfigError
    from ..api.server import bind_plan, serve
    from ..config import load_settings
    from ..service import CoreaService

    try:
        settings = load_settings(args.config)
        api_settings = ApiSettings()
    except (ValidationError, FileNotFoundError) as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    service = CoreaService(settings)
    try:
        app = create_api(service, api_settings)
    except KeyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok, message = bind_plan(args.host, app.state.corea_keys.enabled)
    if not ok:
        print(f"error: {message}", file=sys.stderr)
        return 2
    if service.logging_error:  # turns and ratings wait in the local journal
        print(f"[warning] {service.log_status().message(owner=True)}", file=sys.stderr)
    print(f"COREA API on http://{args.host}:{args.port}/v1 (model 'corea'); {message}",
          file=sys.stderr, flush=True)
    import logging

    # one line per request with the key's id (never the key) next to uvicorn's access log
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(levelname)s:     %(name)s: %(message)s")
    serve(app, args.host, args.port, args.log_level)
    return 0
