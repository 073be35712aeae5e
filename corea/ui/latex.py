"""Model text made ready for the chat's LaTeX rendering.

The chat renders math between ``\\(…\\)``, ``\\[…\\]`` and ``$$…$$`` (KaTeX, in the browser; no
single ``$``: word problems are full of dollar amounts). Models write their final answer as a bare
``\\boxed{72}``, outside any delimiter, which the page showed as raw markup: :func:`math_markup`
puts each complete bare ``\\boxed{…}`` between ``\\(`` and ``\\)``. Text in code (fenced or
inline) and in existing math is left as it is, and so is an unfinished ``\\boxed{`` (the text is
still streaming). Nothing here produces HTML: the chat's own sanitizer and KaTeX (which renders
no HTML of the text it is given) stay the only renderers.
"""

from __future__ import annotations

__all__ = ["math_markup"]

_MATH = (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"))
_BOXED = "\\boxed{"


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``start`` (escaped braces skipped), or None."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _skip(text: str, i: int) -> int | None:
    """The end of the code span or math block starting at ``i`` (its whole length when it is
    not closed yet), or None when none starts there."""
    if text.startswith("```", i):
        j = text.find("```", i + 3)
        return len(text) if j < 0 else j + 3
    if text[i] == "`":
        j = text.find("`", i + 1)
        return len(text) if j < 0 else j + 1
    for left, right in _MATH:
        if text.startswith(left, i):
            j = text.find(right, i + len(left))
            return len(text) if j < 0 else j + len(right)
    return None


def math_markup(text: str) -> str:
    """``text`` with every complete bare ``\\boxed{…}`` put in inline math delimiters.

    >>> math_markup("So the answer is \\\\boxed{72}.")
    'So the answer is \\\\(\\\\boxed{72}\\\\).'
    >>> math_markup("Already math: \\\\(\\\\boxed{1}\\\\); code `\\\\boxed{2}`; open \\\\boxed{3")
    'Already math: \\\\(\\\\boxed{1}\\\\); code `\\\\boxed{2}`; open \\\\boxed{3'
    """
    if _BOXED not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        end = _skip(text, i)
        if end is not None:
            out.append(text[i:end])
            i = end
            continue
        if text.startswith(_BOXED, i):
            close = _closing_brace(text, i + len(_BOXED) - 1)
            inner = text[i:close + 1] if close is not None else ""
            if close is not None and "\\)" not in inner:
                out.append(f"\\({inner}\\)")
                i = close + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)
