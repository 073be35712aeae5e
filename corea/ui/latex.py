"""Model text made ready for the chat: LaTeX rendered, no HTML from the model.

The chat renders math between ``\\(…\\)``, ``\\[…\\]`` and ``$$…$$`` (KaTeX, in the browser;
no single ``$``: word problems are full of dollar amounts). Models write their final answer as a
bare ``\\boxed{72}``, outside any delimiter, which the page showed as raw markup:
:func:`math_markup` puts each complete bare ``\\boxed{…}`` between ``\\(`` and ``\\)``.

Model text is hostile input: the chat's sanitizer removes scripts and event handlers but keeps
elements such as ``<img src=…>`` and Markdown images, which would load any URL from the
visitor's browser. Outside code and math, :func:`math_markup` writes a ``<`` that opens a tag or a
comment as ``&lt;`` and ``![`` as ``!\\[``, so both are shown as the text they are (in code the
renderer shows text, and KaTeX renders no HTML). Text in code (fenced or inline) and in existing
math is left as it is, and so is an unfinished ``\\boxed{`` (the text is still streaming). The
function is idempotent (the chat comes back as the next turn's history).
"""

from __future__ import annotations

__all__ = ["LATEX_DELIMITERS", "math_markup", "answer_markup"]

_MATH = (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"))
LATEX_DELIMITERS = [{"left": left, "right": right, "display": left != "\\("}
                    for left, right in reversed(_MATH)]
"""Gradio's ``latex_delimiters`` of the chat and the Ask tab's turn line, for the same math:
``$$…$$`` and ``\\[…\\]`` displayed, ``\\(…\\)`` inline (no single ``$``: word problems are full of
dollar amounts)."""
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
    """``text`` with every complete bare ``\\boxed{…}`` put in inline math delimiters, and
    tags and Markdown images outside code and math made text (see the module docstring).

    >>> math_markup("So the answer is \\\\boxed{72}.")
    'So the answer is \\\\(\\\\boxed{72}\\\\).'
    >>> math_markup("Already math: \\\\(\\\\boxed{1}\\\\); code `\\\\boxed{2}`; open \\\\boxed{3")
    'Already math: \\\\(\\\\boxed{1}\\\\); code `\\\\boxed{2}`; open \\\\boxed{3'
    """
    if _BOXED not in text and "<" not in text and "![" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        end = _skip(text, i)
        if end is not None:
            out.append(text[i:end])
            i = end
            continue
        if text[i] == "<" and i + 1 < len(text) and (text[i + 1].isalpha() or
                                                      text[i + 1] in "/!?"):
            out.append("&lt;")  # a tag, a comment: shown as text, never an element
            i += 1
            continue
        if text.startswith("![", i):
            out.append("!\\[")  # a Markdown image would load any URL: shown as text
            i += 2
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


def answer_markup(answer: str) -> str:
    """A parsed final answer for a card: LaTeX (``\\frac{3}{4}``, ``\\sqrt{2}``: it has a
    backslash) between ``\\(`` and ``\\)`` so it renders; any other answer, or one that would
    close the math itself, as it is (:func:`math_markup` then treats it as text). A ``|`` is
    escaped (the card is a Markdown table).

    >>> answer_markup("\\\\frac{3}{4}"), answer_markup("72"), answer_markup("a|b")
    ('\\\\(\\\\frac{3}{4}\\\\)', '72', 'a\\\\|b')
    """
    text = answer.replace("|", "\\|")
    if "\\" in answer and "\\)" not in answer and "\\(" not in answer:
        return f"\\({text}\\)"
    return text
