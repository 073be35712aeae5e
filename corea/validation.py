"""Input validation for questions, before any model runs."""

from __future__ import annotations

import re
import unicodedata

# ANSI / VT100 escape sequences: CSI ("ESC [ 31 m", or the one-byte CSI 0x9b), OSC ("ESC ] ... BEL"
# or "... ESC \\"), and two-character escapes. Removed whole: dropping only the ESC character left
# "[31m" in a question, and the model answered "38 + 31m".
_ANSI = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-~]")


class InvalidQuestion(ValueError):
    """The question cannot be asked; the message is shown to the user as is."""


def validate_question(question: object, max_chars: int) -> str:
    """Check and normalise a user question.

    - ``bytes`` are decoded as UTF-8; undecodable bytes are rejected.
    - Terminal escape sequences (``ESC [31m`` colours, titles, ...) are removed whole; other
      control characters than newline and tab are removed; Unicode is NFC-normalised;
      leading/trailing whitespace is stripped.
    - Lone surrogates (text that is not valid Unicode) are rejected.

    Args:
        question: the raw question (``str`` or UTF-8 ``bytes``).
        max_chars: the longest accepted question (characters, after normalisation).

    Returns:
        The cleaned question.

    Raises:
        InvalidQuestion: empty or whitespace-only, longer than ``max_chars``, not text, or not
            valid UTF-8.
    """
    if isinstance(question, bytes):
        try:
            question = question.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidQuestion(f"The question is not valid UTF-8 text (byte {exc.start}).") from exc
    if not isinstance(question, str):
        raise InvalidQuestion("The question must be text.")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQuestion("The question contains characters that are not valid Unicode.") from exc
    cleaned = "".join(ch for ch in _ANSI.sub("", question)
                      if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    cleaned = unicodedata.normalize("NFC", cleaned).strip()
    if not cleaned:
        raise InvalidQuestion("Please enter a question.")
    if len(cleaned) > max_chars:
        raise InvalidQuestion(f"The question is too long: {len(cleaned):,} characters "
                              f"(the limit is {max_chars:,}).")
    return cleaned
