"""Backend for any OpenAI-compatible chat-completions server (OpenAI, ``vllm serve``, llama.cpp server...).

Talks to the server through the official ``openai`` client with streaming enabled. Errors of the
client are mapped to :class:`~corea.backends.base.BackendError` kinds with user-facing messages.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Iterator, Sequence

import openai

from .base import BackendError, Chunk, GenerationParams, Message, Usage

log = logging.getLogger(__name__)

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
LOCAL_DUMMY_KEY = "EMPTY"


def _detail(exc: BaseException) -> str:
    """The client's message plus the underlying cause (e.g. ``[Errno 111] Connection refused``)."""
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    cause = exc.__cause__
    while cause is not None and cause.__cause__ is not None and not str(cause):
        cause = cause.__cause__
    if cause is not None and str(cause) and str(cause) not in msg:
        msg = f"{msg} ({cause})"
    return msg


def _chunk_logprobs(choice) -> tuple[tuple[str, float], ...]:
    """``(token, logprob)`` pairs of a streamed choice (``choice.logprobs.content``), if any."""
    lp = getattr(choice, "logprobs", None)
    content = getattr(lp, "content", None) if lp is not None else None
    if not content:
        return ()
    return tuple((str(t.token), float(t.logprob)) for t in content
                 if getattr(t, "logprob", None) is not None)


class OpenAIBackend:
    """Chat-only backend over an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        settings: the model's :class:`~corea.config.ModelSettings`. Uses ``model`` (server-side
            model name), ``base_url`` (``None`` = OpenAI itself), ``api_key_env`` (name of the
            environment variable holding the key), ``timeout_s`` and ``max_retries``.

    The API key is read once, here. Without a key, a local server (``base_url`` set) gets the dummy
    key ``"EMPTY"`` (what ``vllm serve`` expects); for OpenAI itself every call raises
    ``BackendError("auth", ...)`` instead, so the app can still start. The HTTP client is built on
    first use.
    """

    supports_continuation = False

    def __init__(self, settings: Any):
        self.settings = settings
        self.model_name: str = settings.name
        self.model: str = settings.model
        self.base_url: str | None = settings.base_url
        self.endpoint: str = settings.base_url or OPENAI_DEFAULT_URL
        key = os.environ.get(settings.api_key_env) or None
        self._missing_key_error: str | None = None
        if key is None:
            if self.base_url is None:
                self._missing_key_error = (
                    f"{settings.api_key_env} is not set: the OpenAI API ({self.endpoint}) needs an "
                    f"API key for model '{self.model}'. Export {settings.api_key_env}=sk-... or set "
                    f"base_url to a local OpenAI-compatible server.")
            else:
                key = LOCAL_DUMMY_KEY
        self._api_key = key
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()
        self.logprobs_supported: bool | None = None if getattr(settings, "logprobs", True) \
            else False  # None: not known yet; False: not requested (off or rejected)

    # -- client -------------------------------------------------------------------------------

    def _get_client(self) -> openai.OpenAI:
        if self._missing_key_error is not None:
            raise BackendError("auth", self._missing_key_error)
        with self._lock:
            if self._client is None:
                self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key,
                                             timeout=self.settings.timeout_s,
                                             max_retries=self.settings.max_retries)
            return self._client

    def _map_error(self, exc: openai.OpenAIError) -> BackendError:
        where = f"LLM endpoint {self.endpoint}"
        d = _detail(exc)
        # APITimeoutError subclasses APIConnectionError: check it first.
        if isinstance(exc, openai.APITimeoutError):
            return BackendError("timeout", f"{where} timed out after {self.settings.timeout_s:g} s "
                                           f"(model '{self.model}'): {d}")
        if isinstance(exc, openai.APIConnectionError):
            return BackendError("unreachable", f"{where} unreachable: {d}")
        if isinstance(exc, openai.RateLimitError):
            return BackendError("rate_limited", f"{where} is rate-limiting requests (HTTP 429) "
                                                f"for model '{self.model}': {d}")
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return BackendError("auth", f"{where} rejected the API key from "
                                        f"{self.settings.api_key_env} (HTTP "
                                        f"{getattr(exc, 'status_code', '?')}): {d}")
        if isinstance(exc, openai.NotFoundError):
            return BackendError("model_missing", f"{where} does not serve model '{self.model}' "
                                                 f"(HTTP 404): {d}")
        if isinstance(exc, openai.BadRequestError):
            return BackendError("bad_request", f"{where} rejected the request for model "
                                               f"'{self.model}' (HTTP 400): {d}")
        status = getattr(exc, "status_code", None)
        code = f" (HTTP {status})" if status is not None else ""
        return BackendError("internal", f"{where} failed{code} for model '{self.model}': {d}")

    # -- generation ---------------------------------------------------------------------------

    def _request_kwargs(self, messages: Sequence[Message], params: GenerationParams) -> dict:
        kw: dict[str, Any] = dict(
            model=self.model,
            messages=[m.as_dict() for m in messages],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
        )
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.seed is not None and params.temperature > 0:
            kw["seed"] = params.seed
        if self.logprobs_supported is not False:
            kw["logprobs"] = True
        return kw

    def stream_chat(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        """Stream the reply as one :class:`Chunk` per content delta, then a final chunk with usage.

        A missing API key raises ``BackendError("auth")`` right here; the request itself is sent
        on the first ``next()``. Closing the iterator early closes the HTTP response.
        Token counts are the server's; a server that reports none gives ``Usage(0, 0)``.
        """
        client = self._get_client()
        return self._stream(client, self._request_kwargs(messages, params))

    def _stream(self, client: openai.OpenAI, kwargs: dict) -> Iterator[Chunk]:
        try:
            try:
                stream = client.chat.completions.create(**kwargs)
            except openai.BadRequestError as exc:
                if not kwargs.get("logprobs") or "logprob" not in _detail(exc).lower():
                    raise
                log.warning("%s does not support logprobs (%s); asking without them, so this "
                            "model has no token-probability signals", self.endpoint,
                            _detail(exc))
                self.logprobs_supported = False
                kwargs = {k: v for k, v in kwargs.items() if k != "logprobs"}
                stream = client.chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise self._map_error(exc) from exc
        usage = Usage()
        finish: str | None = None
        try:
            with stream:
                try:
                    for event in stream:
                        if getattr(event, "usage", None) is not None:
                            u = event.usage
                            usage = Usage(int(u.prompt_tokens or 0), int(u.completion_tokens or 0))
                        for choice in event.choices or ():
                            if choice.index not in (0, None):
                                continue
                            if choice.finish_reason:
                                finish = choice.finish_reason
                            text = choice.delta.content if choice.delta is not None else None
                            lps = _chunk_logprobs(choice)
                            if lps:
                                self.logprobs_supported = True
                            if text or lps:
                                yield Chunk(text=text or "", logprobs=lps)
                except openai.OpenAIError as exc:
                    raise self._map_error(exc) from exc
        finally:
            stream.close()  # idempotent; also covers GeneratorExit from an early close()
        yield Chunk(usage=usage, finish_reason=finish or "stop")

    def continue_chat(self, messages: Sequence[Message], assistant_prefix: str,
                      params: GenerationParams) -> Iterator[Chunk]:
        raise BackendError("unsupported", f"{self.model_name} (OpenAI-compatible chat API) cannot "
                                          f"continue an assistant prefix; use confidence_mode "
                                          f"'free' for this model")
