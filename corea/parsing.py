"""Parsing of model completions: the final answer and the verbalized confidence.

(Almost 600 lines: every rule is a small function whose docstring lists the real completions it
was written for and the near misses it must leave alone; they read best side by side, and the
answer and confidence rules depend on each other — a box holding a confidence is not an answer.)

Pure functions, no model. The SLM is asked (see :mod:`corea.prompts`) to put its final answer in
``\\boxed{...}`` and to end with a line ``Confidence: <number in [0, 1]>``. Real completions deviate
from that format, so the parsers here accept the common variants and, where the text is unclear,
return ``None`` rather than guess. In particular they never invent a confidence number and never
read an option letter out of an ordinary word.

Public API:

* :func:`extract_boxed` -- content of the last ``\\boxed{...}`` / ``\\fbox{...}``.
* :func:`extract_choice` -- the option letter chosen in a multiple-choice completion.
* :func:`extract_answer` -- the final answer of a completion (free-form or multiple choice).
* :class:`ConfidenceParse`, :func:`parse_confidence_value`, :func:`parse_confidence` -- the
  verbalized confidence, or ``None`` with a note saying why.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "ConfidenceParse",
    "confidence_echoes_answer",
    "confidence_box",
    "confidence_label_spans",
    "extract_answer",
    "extract_boxed",
    "extract_choice",
    "parse_confidence",
    "parse_confidence_value",
]

# --------------------------------------------------------------------------------------------
# \boxed{...}
# --------------------------------------------------------------------------------------------

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"\\[{}]|[{}]")  # escaped braces are matched (and skipped) as a whole


def _box_spans(text: str) -> list[tuple[int, int, str | None]]:
    """All top-level boxes in order as ``(start, end, content)``; content ``None`` if unclosed.

    A closed box's inner boxes are skipped (they are part of its content). An unclosed box is
    recorded with content ``None`` and scanning resumes just after its opening brace, so a
    complete box written later (e.g. by a forced ``Answer:`` continuation after a truncated box)
    is still found. Escaped braces ``\\{`` / ``\\}`` do not count.
    """
    # match every "{" with its "}" in one pass (linear time, even for many unclosed boxes)
    if _BOX_OPEN.search(text) is None:
        return []
    close: dict[int, int] = {}
    stack: list[int] = []
    for b in _BRACE.finditer(text):
        c = b.group()
        if c == "{":
            stack.append(b.start())
        elif c == "}" and stack:
            close[stack.pop()] = b.start()
    out: list[tuple[int, int, str | None]] = []
    pos = 0
    for m in _BOX_OPEN.finditer(text):
        if m.start() < pos:
            continue  # inside a closed box already taken
        j = close.get(m.end() - 1)
        if j is None:
            out.append((m.start(), m.end(), None))
        else:
            out.append((m.start(), j + 1, text[m.end():j]))
            pos = j + 1
    return out


def _scan_boxes(text: str) -> list[str | None]:
    """The contents of :func:`_box_spans` (``None`` for an unclosed box)."""
    return [c for _, _, c in _box_spans(text)]


_CONFIDENCE_WORD = re.compile(r"(?i)\bconfiden")
_PROBABILITY_CORRECT = re.compile(r"(?is)\bprobab.{0,200}\bcorrect|\bcorrect.{0,200}\bprobab")
_LABEL_IN_BOX = re.compile(r"(?i)^[\s*_]*confidence\b")
# "confidence" right before the box: "My confidence: \boxed{..}", "confidence is \(\boxed{..}"
_CONFIDENCE_JUST_BEFORE = re.compile(
    r"(?i)\bconfiden\w*[ \t]*(?:level|score)?[ \t]*(?:is|of|:|=)?[ \t*:]*(?:\\\(|\\\[|\$)?\s*$")


def _confidence_box(text: str) -> tuple[str | None, str] | None:
    """Detect a confidence written in the last box: ``(answer, confidence content)``.

    Small models asked for "the final answer in \\boxed{} and then Confidence: ..." sometimes box
    the confidence too. The last box is taken for a confidence, not an answer, when it reads as a
    confidence value and either

    * it starts with a confidence label (``\\boxed{Confidence: 0.8}``), or
    * the text just before it (since the previous box, at most 300 characters) talks about the
      confidence: it mentions "confidence" (for a lone box: right before it, "My confidence:
      \\boxed{0.7}"), or "probability" together with "correct"
      (``... how likely it is that your answer is correct ... the probability is \\boxed{1}``).

    ``answer`` is the content of the box before it, or ``None`` when there is none (the caller
    then looks for an explicit answer statement before the confidence box). A probability
    question's answer ("the probability of two heads is \\boxed{1/4}") mentions neither
    "confidence" nor "correct" and stays the answer.
    """
    spans = [(a, b, c) for a, b, c in _box_spans(text) if c is None or _strip_math(c)]
    if not spans or spans[-1][2] is None:
        return None
    last = spans[-1]
    content = _strip_math(last[2])
    prev = spans[-2] if len(spans) > 1 else None
    labelled = _LABEL_IN_BOX.match(content) is not None
    value = parse_confidence(content) if labelled else parse_confidence_value(content)
    if value.value is None:
        return None
    if not labelled:
        lo = max(prev[1] if prev else 0, last[0] - 300)
        context = text[lo:last[0]]
        # with an earlier box, "confidence" anywhere between the two boxes is enough; for a lone
        # box the word must lead straight into it, so "low confidence in step 2 ... \\boxed{3}"
        # keeps its answer
        talks = (_CONFIDENCE_WORD.search(context) if prev is not None
                 else _CONFIDENCE_JUST_BEFORE.search(context))
        if not (talks or _PROBABILITY_CORRECT.search(context)):
            return None
    if prev is not None and prev[2] is None:
        return None  # the answer box before it was cut: leave it to the truncation rules
    answer = _strip_math(prev[2]) if prev is not None else None
    return answer, content


def _strip_math(s: str) -> str:
    """Strip surrounding whitespace and ``$`` signs."""
    prev = None
    while s != prev:
        prev = s
        s = s.strip().strip("$")
    return s


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text``.

    Args:
        text: a model completion.

    Returns:
        The content of the last complete box, with surrounding whitespace and ``$`` stripped, or
        ``None`` if there is no usable box.

    Details and edge cases:
        * ``\\boxed{..}``, ``\\boxed {..}`` and ``\\fbox{..}`` are accepted.
        * Nested braces are counted: ``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``; a box inside a
          box belongs to the outer one. Escaped braces ``\\{``, ``\\}`` are not counted.
        * Several boxes: the last one wins (``\\boxed{5} ... \\boxed{7}`` -> ``7``); a repeated
          final box (``\\boxed{7}\\boxed{7}``) gives ``7``, boxes are never concatenated.
        * Empty boxes (``\\boxed{}``, e.g. the model restating the format) are ignored.
        * If the last box is unclosed (output truncated inside the box), the result is ``None``:
          the model's final answer was cut, so we do NOT fall back to an earlier complete box.
          A complete box written *after* an unclosed one (e.g. by a forced ``Answer:``
          continuation) is still used.
    """
    boxes = [b for b in _scan_boxes(text) if b is None or _strip_math(b)]
    if not boxes or boxes[-1] is None:
        return None
    return _strip_math(boxes[-1])


# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------

# Keyword part of an answer statement ("answer is", "answer:", "**Answer:**", "answer choice is").
_CHOICE_KEY = (
    r"(?i:\banswer\b(?:[ \t]++(?:choice|option))?[ \t*_]*+"
    r"(?:(?:is|would[ \t]+be|should[ \t]+be|must[ \t]+be)\b[ \t]*+:?|[:：]))"
)
# The letter itself: optional markdown / $ / \text{ / parenthesis around one UPPERCASE letter that
# is not part of a word ("Answer: Apple" gives nothing).
_LETTER_TOKEN = (
    r"[\s*_$]*+(?:(?i:option|choice)[ \t]++)?[ \t*_$]*+"
    r"(?:\\(?:text|textbf|mathrm|mathbf)\s*+\{\s*+)?[(\[]?+[ \t]*+([A-Z])(?:[ \t]*+[)\]])?+"
    r"(?![\w'’\-])"
)
_CHOICE_STMT = re.compile(_CHOICE_KEY + _LETTER_TOKEN)
_LONE_LETTER_LINE = re.compile(
    r"[ \t*_]*+[(\[]?+([A-Z])[)\]]?+\.?+[ \t*_]*+")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{(.*)\}", re.S)


def _valid_letters(n_choices: int) -> str:
    if not 0 < n_choices <= 26:
        raise ValueError(f"between 1 and 26 choices are supported, got {n_choices}")
    return string.ascii_uppercase[:n_choices]


def _letter_from_box(content: str, valid: str) -> str | None:
    """Option letter written inside a box: ``C``, ``(C)``, ``\\text{C}``, ``C) 42``, ``(C) 42``."""
    s = content.strip()
    while (m := _TEXT_WRAP.fullmatch(s)) is not None:
        s = m.group(1).strip()
    s = s.strip("*$ \t\n")
    m = re.fullmatch(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\.?", s)
    if m is None:
        # a letter followed by the option text: "(C) 42", "C) 42", "C. 42", "C: 42"
        m = re.match(r"\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z])[).:]\s", s)
    if m is None:
        return None
    letter = next(g for g in m.groups() if g).upper()
    return letter if letter in valid else None


def extract_choice(text: str, n_choices: int) -> str | None:
    """The option letter chosen in a multiple-choice completion.

    Args:
        text: a model completion.
        n_choices: number of options; only the letters ``A`` .. the ``n_choices``-th are valid.

    Returns:
        An uppercase letter, or ``None`` if the completion states no valid option explicitly.

    Raises:
        ValueError: if ``n_choices`` is not between 1 and 26.

    Order of preference:
        1. The last box (:func:`extract_boxed`), if it holds a valid letter: ``\\boxed{C}``,
           ``\\boxed{(C)}``, ``\\boxed{\\text{C}}``, ``\\boxed{(C) 42}``; a lowercase letter is
           accepted inside a box. If the box holds something else (``\\boxed{42}``) or an
           out-of-range letter, the text statements below are tried.
        2. The LAST explicit answer statement with a valid letter: ``The answer is (C)``,
           ``Answer: C``, ``ANSWER: **A**``, ``**Final Answer:** B``, ``The correct answer is
           option D``, ``Answer: (D) 42``. Outside a box the letter must be uppercase and must not
           be the start of a word (``Answer: Apple`` gives nothing). Statements naming an
           out-of-range letter are skipped.
        3. The last non-empty line, if it consists of one letter alone (``C``, ``(C)``, ``**C**``).

        Letters are never picked out of ordinary prose: ``A train leaves ...`` gives ``None``.
    """
    valid = _valid_letters(n_choices)
    boxed = extract_boxed(text)
    if boxed is not None:
        letter = _letter_from_box(boxed, valid)
        if letter is not None:
            return letter
    for m in reversed(list(_CHOICE_STMT.finditer(text))):
        if m.group(1) in valid:
            return m.group(1)
    for line in reversed(text.splitlines()):
        if not line.strip() or _CONF_LABEL.search(line):
            continue
        m = _LONE_LETTER_LINE.fullmatch(line)
        if m is not None and m.group(1) in valid:
            return m.group(1)
        break
    return None


# --------------------------------------------------------------------------------------------
# Free-form answers
# --------------------------------------------------------------------------------------------

# "Answer:" / "Final answer:" / "**Final Answer:**" / "### Answer:" at the start of a line.
_ANS_LABEL = re.compile(r"(?im)^[ \t>#*_\-]*+(?:final[ \t]++)?answer[ \t*_]*+[:：]")
# "... Final Answer: **73**": a "final answer" label after other text on its line.
_FINAL_ANS_INLINE = re.compile(r"(?i)\bfinal[ \t]++answer[ \t*_]*+[:：]")
# "the answer is", "the final answer is", "answer is:" anywhere.
_ANS_IS = re.compile(r"(?i)\b(?:final\s++)?answer\s++is\b[ \t]*+:?")
# First words that show an "answer is" phrase is reasoning, not a statement of the answer.
_NOT_AN_ANSWER = {
    "correct", "incorrect", "wrong", "right", "not", "probably", "likely", "clearly", "indeed",
    "that", "this", "the", "a", "an", "to", "in", "still", "also", "then", "unclear", "unknown",
    "given", "equal", "obtained", "found", "as", "what", "which",
}
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_CLAUSE_COMMA = re.compile(r",\s+(?=[^\W\d_])")  # a comma that starts a worded clause


def _clean_answer(v: str) -> str:
    prev = None
    while v != prev:
        prev = v
        v = v.strip()
        for pre, suf in (("**", "**"), ("__", "__"), ("\\(", "\\)"), ("\\[", "\\]")):
            if v.startswith(pre) and v.endswith(suf) and len(v) >= len(pre) + len(suf):
                v = v[len(pre):len(v) - len(suf)]
        v = v.strip().strip("$").strip()
        v = v.removeprefix("**").removesuffix("**").strip()
        v = v.rstrip(".").rstrip()
    boxed = extract_boxed(v)
    return boxed if boxed is not None else v


def _statement_value(text: str, end: int, is_form: bool) -> str | None:
    line, _, after = text[end:].partition("\n")
    if not line.strip():
        line = next((ln for ln in after.split("\n") if ln.strip()), "")
        if not line or _CONF_LABEL.match(line.lstrip(" \t*_#>-")) or _ANS_LABEL.match(line):
            return None
    if (m := _CONF_LABEL.search(line)) is not None:
        line = line[:m.start()]
    if is_form:
        if (m := _SENTENCE_END.search(line)) is not None:
            line = line[:m.start()]
        # "the final answer is 800 cups, which is ..." -> "800 cups" (a list "1, 2, 3" stays)
        if (m := _CLAUSE_COMMA.search(line)) is not None:
            line = line[:m.start()]
        words = line.split()
        if not words or words[0].strip("*_$:,") in _NOT_AN_ANSWER or line.rstrip().endswith("?"):
            return None
    value = _clean_answer(line)
    # a lone math opener ("the final answer is:\n\\[" before a box that held the confidence) or
    # other bare punctuation is no answer
    if not value or not any(ch.isalnum() for ch in value) or value in ("\\[", "\\("):
        return None
    return value


def extract_answer(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The final answer of a completion.

    Args:
        text: a model completion (possibly including a forced ``Answer:`` continuation).
        choices: the option texts of a multiple-choice question, or ``None`` / empty for a
            free-form question.

    Returns:
        With ``choices``: ``extract_choice(text, len(choices))`` (a letter or ``None``).
        Otherwise, in order of preference:

        1. the last box (:func:`extract_boxed`) — unless that box holds the model's confidence
           (see :func:`_confidence_box`), then the box before it;
        2. the last explicit statement: a line starting with ``Answer:`` / ``Final answer:``
           (markdown such as ``**Answer:**`` or ``### Final Answer:`` allowed), a ``Final
           answer:`` label anywhere in a line (``... Final Answer: **73**`` -> ``73``), or ``the
           answer is X`` / ``the final answer is X`` anywhere. The value is the rest of that line (or the
           next non-empty line when the label ends its line); an ``answer is`` value is cut at
           the end of its sentence (``. ``). Surrounding ``**``, ``$``, ``\\(..\\)`` and a trailing
           period are stripped. A ``Confidence:`` label and what follows it is never part of the
           answer (``Answer: 42\\nConfidence: 0.9`` -> ``42``, ``The answer is 42. Confidence:
           0.9`` -> ``42``). ``answer is`` phrases that are clearly reasoning (``the answer is
           correct``, ``the answer is not 5``, questions ending with ``?``) are skipped and an
           earlier statement is used;
        3. ``None``.
    """
    if choices:
        return extract_choice(text, len(choices))
    conf_box = _confidence_box(text)
    if conf_box is not None:
        if conf_box[0] is not None:
            return conf_box[0]
        # the only box holds the confidence: look for a statement before it
        text = text[:_box_spans(text)[-1][0]]
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    # After a truncated (unclosed) last box only a later statement counts, e.g. a forced
    # "Answer:" continuation; "the final answer is \\boxed{4" itself is no answer.
    spans = _box_spans(text)
    after = spans[-1][0] + 1 if spans and spans[-1][2] is None else 0
    matches = [(m.start(), m.end(), False) for m in _ANS_LABEL.finditer(text, after)]
    labelled = {m[1] for m in matches}
    matches += [(m.start(), m.end(), False) for m in _FINAL_ANS_INLINE.finditer(text, after)
                if m.end() not in labelled]
    matches += [(m.start(), m.end(), True) for m in _ANS_IS.finditer(text, after)]
    for _, end, is_form in sorted(matches, reverse=True):
        value = _statement_value(text, end, is_form)
        if value is not None:
            return value
    return None


# --------------------------------------------------------------------------------------------
# Confidence
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfidenceParse:
    """A parsed verbalized confidence.

    Attributes:
        value: the confidence in [0, 1], or ``None`` if none could be read.
        note: why ``value`` is ``None`` (``"missing"``, ``"not a number: 'high'"``,
            ``"out of range: 150"``), else ``None``.
    """

    value: float | None
    note: str | None = None


# "Confidence:", "Confidence level:", "**Confidence:**", "**Confidence**:", "Confidence = ",
# "Confidence (0-1):", "confidence_score:". "confidence" must be followed (after optional
# level/score words) by ":" or "=", so prose such as "low confidence in step 2" never matches.
_CONF_LABEL = re.compile(
    r"(?i)\bconfidence(?:[ \t_]++(?:level|score|estimate|rating|value))?[ \t]*+"
    r"(?:\([^()\n]{0,30}\))?[ \t*_]*+[:=]"
)
_LEAD = re.compile(r"^(?:[\s*_`\"'$:=>#]|\\boxed\s*+\{|\\text\s*+\{|\\\(|\\\[)++")
_HEDGE = re.compile(
    r"^(?:about|approximately|approx\.?|around|roughly|circa|~|≈)[ \t]*", re.IGNORECASE)
_NUMBER = re.compile(r"([-+−]?)[ \t]*+((?:\d++(?:[.,]\d++)?|[.,]\d++)(?:[eE][-+]?\d++)?)")
_PERCENT = re.compile(r"[ \t]*+(?:%|percent\b|per[ \t]*+cent\b)", re.IGNORECASE)
_FRACTION = re.compile(r"[ \t]*+(?:/|out[ \t]++of\b)[ \t]*+(\d++(?:[.,]\d++)?)", re.IGNORECASE)


def _num(s: str) -> float:
    return float(s.replace(",", "."))


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def parse_confidence_value(s: str) -> ConfidenceParse:
    """Parse one confidence value string, e.g. what the model wrote after ``Confidence:``.

    Args:
        s: the value text, e.g. ``" 0.85\\n..."``, ``" 85%"``, ``"85/100"``, ``"0.9."``,
            ``"**0.8**"``, ``"high"``, ``""``. Only the first non-empty line is read.

    Returns:
        :class:`ConfidenceParse` with ``value`` in [0, 1], or ``value=None`` and a ``note``.

    Rules (the number must START the value, after markdown ``**``/``$``/quotes and an optional
    hedge such as ``about``, ``~``; a number later in a sentence is not taken, so
    ``"high (0.9)"`` and ``"I'd say 0.8"`` give ``None``; a number is never invented):

        * ``N%`` / ``N percent`` -> N/100 (N must be in [0, 100]). A percent written as a
          decimal fraction below 1 (``0.95%``) mixes the two formats; it is read as the
          probability N (0.95), as most readers and tools do, not as 0.0095.
        * scientific notation is a number like any other (``1e-1`` -> 0.1, ``9.5E-1`` -> 0.95).
        * ``N/M`` / ``N / M`` / ``N out of M`` -> N/M (``85/100`` -> 0.85, ``8/10`` -> 0.8);
          must be in [0, 1]; ``M = 0`` -> not a number.
        * bare N in [0, 1] -> N as is; ``1`` means 1.0 (certain), not 1 %.
        * bare N in [2, 100] -> a percent, N/100 (``85`` -> 0.85).
        * bare N in (1, 2), e.g. ``1.5``: ambiguous (neither a probability nor a plausible
          percent) -> ``None``, note ``"out of range: 1.5"``.
        * N > 100 or negative -> ``None``, note ``"out of range: <as written>"``
          (``"out of range: 150"``, ``"out of range: -0.5"``, ``"out of range: 150%"``).
        * words only (``"high"``, ``"very confident"``) -> ``None``, note
          ``"not a number: 'high'"`` (the text as ``repr``, cut to 40 characters).
        * empty / whitespace / markdown only -> ``None``, note ``"missing"``.

        A decimal comma is accepted (``0,85`` -> 0.85); a trailing period is ignored.
    """
    line = next((ln for ln in (s or "").splitlines() if ln.strip()), "")
    t = _LEAD.sub("", line.strip())
    t = _HEDGE.sub("", t)
    t = _LEAD.sub("", t)
    if not t.strip("*_`$ \t"):
        return ConfidenceParse(None, "missing")
    m = _NUMBER.match(t)
    if m is None:
        return ConfidenceParse(None, f"not a number: {line.strip()[:40]!r}")
    negative = m.group(1) in ("-", "−")
    x = _num(m.group(2))
    if negative and x != 0:
        x = -x
    rest = t[m.end():]
    written = f"{'-' if negative and x != 0 else ''}{m.group(2)}"

    if _PERCENT.match(rest) is not None:
        written += "%"
        if not 0 <= x <= 100:
            return ConfidenceParse(None, f"out of range: {written}")
        if 0 < x < 1 and re.fullmatch(r"0?[.,]\d+", m.group(2)):  # "0.95%": a probability
            return ConfidenceParse(x + 0.0)
        return ConfidenceParse(x / 100 + 0.0)

    if (f := _FRACTION.match(rest)) is not None:
        d = _num(f.group(1))
        written += f"/{f.group(1)}"
        if d == 0:
            return ConfidenceParse(None, f"not a number: {written!r}")
        v = x / d
        if not 0 <= v <= 1:
            return ConfidenceParse(None, f"out of range: {written}")
        return ConfidenceParse(v + 0.0)

    if 0 <= x <= 1:
        return ConfidenceParse(x + 0.0)
    if 2 <= x <= 100:
        return ConfidenceParse(x / 100)
    return ConfidenceParse(None, f"out of range: {written}")


def confidence_box(text: str) -> tuple[str | None, str] | None:
    """Whether the last box of ``text`` holds the model's confidence rather than its answer:
    ``(the answer before it or None, the box content)``, else None (rules: the private helper's
    docstring in this module)."""
    return _confidence_box(text)


def confidence_label_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of every ``Confidence:`` label in ``text`` (the labels
    :func:`parse_confidence` reads; prose such as "low confidence in step 2" is not one)."""
    return [m.span() for m in _CONF_LABEL.finditer(text or "")]


def strip_confidence(text: str, keep_answer: bool = False) -> str:
    """The solution without what follows its answer: the last ``Confidence:`` line
    (self-written or forced, with its Markdown markup) and trailing space; unless ``keep_answer``,
    also a forced ``"\n\nAnswer:"`` continuation (:data:`corea.prompts.ANSWER_SUFFIX`).

    The text a confidence-scoped adapter continues (:data:`corea.adapters.SCOPES`), and the one
    ``train.confidence`` trains it on."""
    from .prompts import ANSWER_SUFFIX

    if not keep_answer:
        cut = text.find(ANSWER_SUFFIX)
        if cut >= 0:
            text = text[:cut]
    spans = confidence_label_spans(text)
    if spans:
        start = spans[-1][0]
        while start > 0 and text[start - 1] in " \t*_#>-":  # "**Confidence:**" markup
            start -= 1
        text = text[:start]
    return text.rstrip()


def _box_confidence(content: str) -> ConfidenceParse:
    """The confidence in a confidence box's content (``0.9`` or ``Confidence: 0.9``)."""
    if _LABEL_IN_BOX.match(content):
        return parse_confidence(content)
    return parse_confidence_value(content)


def parse_confidence(text: str) -> ConfidenceParse:
    """The final verbalized confidence of a whole completion.

    Args:
        text: a model completion (possibly including a forced ``\\nConfidence:`` continuation).

    Returns:
        :class:`ConfidenceParse` for the LAST ``Confidence``-labelled statement, read with
        :func:`parse_confidence_value`; ``ConfidenceParse(None, "missing")`` if there is none.

    Details and edge cases:
        * A label is the word ``confidence`` (case-insensitive, not inside another word),
          optionally followed by ``level`` / ``score`` / ``estimate`` / ``rating`` / ``value``
          and a short parenthetical such as ``(0-1)``, then ``:`` or ``=``; markdown bold around
          it is allowed: ``Confidence: 0.85``, ``**Confidence:** 0.9``, ``**Confidence**: 0.9``,
          ``Confidence level: 0.9``, ``Confidence = 0.9``, ``The answer is 42. Confidence: 0.9``.
        * The last label wins, even if its value is unusable (``Confidence: 0.8 ...
          Confidence: high`` -> ``None``, ``"not a number: 'high'"``); earlier labels are not
          used as a fallback.
        * The label may precede the answer: ``Confidence: 0.8\\n\\boxed{3}`` -> 0.8.
        * If the label ends its line, the value is read from the next non-empty line, unless that
          line is an answer (holds a ``\\boxed`` or starts with ``Answer:``): then "missing".
        * With no usable label value, a confidence the model put in a final box after its boxed answer, with
          "confidence" mentioned between the two boxes, is read (see :func:`_confidence_box`).
        * Chosen policy for prose: the word "confidence" without ``:`` / ``=`` (``I have low
          confidence in step 2, around 30% sure``, ``with confidence 0.3 we can``) is never
          read, whether or not a labelled line exists; a completion with only such mentions
          gives ``None`` with note ``"missing"``.
    """
    labels = list(_CONF_LABEL.finditer(text or ""))
    if not labels:
        conf_box = _confidence_box(text or "")
        if conf_box is not None:  # "... my confidence is \\boxed{0.9}" with no label line
            return _box_confidence(conf_box[1])
        return ConfidenceParse(None, "missing")
    line, _, after = text[labels[-1].end():].partition("\n")
    if not line.strip("*_ \t"):
        # label ends its line: read the next non-empty line, unless that is the answer
        line = next((ln for ln in after.splitlines() if ln.strip()), "")
        if _BOX_OPEN.search(line) or _ANS_LABEL.match(line):
            return ConfidenceParse(None, "missing")
    parsed = parse_confidence_value(line)
    if parsed.value is None:
        # the label only restated the format ('written as "Confidence: " followed by ...') and
        # the value went into a box after it
        conf_box = _confidence_box(text)
        if conf_box is not None and text.rfind("\\boxed", labels[-1].end()) >= 0:
            boxed = _box_confidence(conf_box[1])
            if boxed.value is not None:
                return boxed
    return parsed


# --------------------------------------------------------------------------------------------
# Answer echoed as confidence
# --------------------------------------------------------------------------------------------

def _significant_digits(s: str) -> str:
    """The digits of a number as written, without sign, separators or leading zeros."""
    return re.sub(r"\D", "", s).lstrip("0")


def confidence_echoes_answer(answer: str | None, confidence: float | None) -> bool:
    """Whether a stated confidence is the final answer itself, scaled into [0, 1].

    Small models often copy the answer into the confidence line: ``\\boxed{42}`` then
    ``Confidence: 0.42``, ``\\boxed{960}`` then ``0.96``, ``\\boxed{120}`` then ``0.12``,
    ``\\boxed{685}`` then "the probability ... is ``\\boxed{0.685}``". The rule: the confidence's
    significant digits (``0.42`` -> ``42``) and the answer's (``42``, ``1,200`` -> ``1200``) have at
    least two digits each and one is a prefix of the other. A one-digit coincidence (answer 9,
    confidence 0.9), a certainty (1.0), and a non-numeric answer are never called an echo.

    Args:
        answer: the parsed final answer (any text).
        confidence: the parsed confidence in [0, 1].

    Returns:
        True when the confidence looks like the answer's digits.
    """
    if not answer or confidence is None or not 0.0 < confidence < 1.0:
        return False
    core = answer.strip().strip("$").replace("\\!", "").replace("{,}", "")
    if not re.fullmatch(r"[-+−]?\s*[\d,.\s]+", core):
        return False
    a = _significant_digits(core)
    c = _significant_digits(f"{confidence:.6f}".rstrip("0"))
    if len(a) < 2 or len(c) < 2:
        return False
    return a.startswith(c) or c.startswith(a)
