"""Program of thought (PoT): the model writes a Python program, the sandbox runs it, and what it
prints is the answer. Primitives for the cascade's ``pot`` and ``mot`` solve modes.

* :func:`extract_program` -- the program in a model's reply (a ```python block, or bare code);
* :func:`run_pot_program` / :func:`run_completion` -- run it in :mod:`corea.sandbox` and read the
  answer, as a :class:`PotOutcome`;
* :func:`answer_from_output` -- the answer from what the program printed (rules in
  :data:`POT_RULES`);
* :func:`answers_agree` -- whether a CoT and a PoT answer say the same, with the grader's
  equivalence (:func:`corea.grading.same_answer`): the ``mot`` agreement signal.

**What "the solution" is for PoT.** The solution text is the program as extracted
(:attr:`PotOutcome.program`): what the sandbox runs and what a reader checks. The stated
confidence is read from the reply after the program (a ``Confidence:`` line the model wrote on
its own, else the forced ``Confidence:`` suffix, else a short turn that names the answer and asks
how likely it is right), with the same parser as for chain of thought;
token signals (mean log-probability, entropy) and hidden states are taken over the reply's tokens
up to the end of the program, exactly as they are taken over a CoT solution up to its answer.
A program that does not run (any :data:`corea.sandbox.ErrorKind`, or no program at all) gives an
unusable answer (``answer`` None): never kept, and the reason is recorded in ``error`` and
``message``.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

from .grading import same_answer
from .parsing import extract_answer
from .sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_program

__all__ = ["POT_RULES", "PotOutcome", "answer_from_output", "answers_agree", "extract_program",
           "normalise_number", "run_completion", "run_pot_program"]

POT_RULES = ("2: the last ```python block that parses, else the last one (its syntax error), "
             "else bare code; the answer is the last printed line "
             "that is not a confidence statement (its stated answer, else its number), else "
             "`answer`; float artifacts of 15+ significant digits rounded to 12")
"""Version of how a reply becomes a PoT answer; part of a run's identity with
:data:`corea.prompts.POT_VERSION`."""

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PY_TAGS = {"python", "py", "python3", "py3"}
_PLAIN = re.compile(r"[-+]?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
_FRACTION = re.compile(r"[-+]?\d+\s*/\s*\d+")
_NUMBER_TOKEN = re.compile(r"[-+]?\d+\s*/\s*\d+(?![\d.])|[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?"
                           r"(?:\.\d+)?(?:[eE][-+]?\d+)?")
_MAX_TRIM_LINES = 200
_CONFIDENCE_LINE = re.compile(r"\s*[*_#>]*\s*confidence\b[^=\n]*:", re.I)
_CODE_START = re.compile(r"\s*(?:[A-Za-z_][\w\[\]'\", .]*\s*[-+*/%]?=[^=]|print\s*\(|import\s|"
                         r"from\s+\w+\s+import\s|def\s|for\s|while\s|if\s|#)")


@dataclass(frozen=True)
class PotOutcome:
    """One program-of-thought attempt.

    Attributes:
        program: the program text run (the PoT "solution"), or None when the reply held none.
        result: the sandbox's :class:`corea.sandbox.SandboxResult`, or None when nothing ran.
        answer: the normalised answer, or None when unusable.
        error: None when usable; else the sandbox's error kind, ``"no_program"`` (the reply held
            no program) or ``"unavailable"`` (no sandbox worker could start here).
        message: why it is unusable ("" when usable).
    """

    program: str | None
    result: SandboxResult | None
    answer: str | None
    error: str | None
    message: str

    @property
    def ok(self) -> bool:
        """Whether the attempt gave a usable answer."""
        return self.answer is not None

    def as_dict(self) -> dict:
        """JSON-ready (the sandbox result nested)."""
        return asdict(self)

    def status_line(self) -> str:
        """One line for people: ``answer: 42 (0.004 s)`` or ``<error>: <message>``."""
        secs = f" ({self.result.seconds:.3f} s)" if self.result is not None else ""
        if self.ok:
            return f"answer: {self.answer}{secs}"
        return f"{self.error}: {self.message}{secs}"


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return bool(code.strip())


def _trimmed_code(text: str) -> str | None:
    """Bare code: the text from its first code-like line, without trailing lines that keep it
    from parsing (prose, a ``Confidence:`` line), when what is left parses (linear in lines)."""
    lines = text.strip().splitlines()[:_MAX_TRIM_LINES]
    while lines and _CONFIDENCE_LINE.match(lines[-1]):  # parses as an annotation otherwise
        lines.pop()
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), None)
    if start is None:
        return None
    for end in range(len(lines), start, -1):
        chunk = "\n".join(lines[start:end])
        if _parses(chunk) and _looks_like_code(chunk):
            return chunk
    return None


def _looks_like_code(chunk: str) -> bool:
    """Not a sentence that happens to parse: some line assigns, calls ``print``, imports or
    defines."""
    return any(_CODE_START.match(ln) for ln in chunk.splitlines())


def extract_program(completion: str) -> str | None:
    """The program in a model's reply.

    Rules, in order:

    1. fenced blocks (```` ```python ... ``` ````; an unclosed last fence, cut by the token
       budget, runs to the end of the reply): the last block tagged ``python``/``py`` that
       parses, else the last tagged one (it is run and fails with its syntax error); else the
       last untagged block that parses and looks like code (an output block
       such as ```` ```\\n18\\n``` ```` does not);
    2. no fence: the reply itself, without leading and trailing prose lines, when what is left
       parses and assigns, calls, imports or defines something;
    3. otherwise None.

    The returned text is the program as written (not reformatted).
    """
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(completion or "")]
    python = [code for tag, code in blocks if tag in _PY_TAGS and code.strip()]
    tagged = [code for code in python if _parses(code)] or python[-1:]  # else its syntax error
    if tagged:
        return tagged[-1].strip("\n")
    untagged = [code for tag, code in blocks
                if not tag and _parses(code) and _looks_like_code(code)]
    if untagged:
        return untagged[-1].strip("\n")
    if blocks:
        return None
    return _trimmed_code(completion or "")


def normalise_number(text: str) -> str | None:
    """A printed number in the form grading compares: ``18.0`` -> ``18``, ``$1,234.50`` ->
    ``1234.5``, ``25%`` -> ``25`` (grading drops percent signs), ``1e-05`` -> ``0.00001``,
    ``17.999999999999996`` -> ``18`` (a binary float artifact: a decimal point or exponent and 15
    or more significant digits are rounded to 12; integers stay exact), ``3/4`` -> ``3/4``.
    None when ``text`` is not one number."""
    s = text.strip().rstrip(".").strip()
    if _FRACTION.fullmatch(s):
        return re.sub(r"\s+", "", s).lstrip("+")
    if not s or not _PLAIN.fullmatch(s) or not re.search(r"\d", s):
        return None
    s = s.replace("$", "").replace(",", "").replace("%", "").replace(" ", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    digits = len(value.as_tuple().digits)
    if digits >= 15 and ("." in s or "e" in s.lower()):  # a float's repr, not an exact int
        value = round(value, 12 - value.adjusted() - 1)
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "+0") else out


def answer_from_output(output: str, answer_value: str | None = None) -> str | None:
    """The answer a program gave (rules in :data:`POT_RULES`).

    Args:
        output: what the program printed.
        answer_value: ``str()`` of its ``answer`` variable (used when it printed nothing).

    Returns:
        From the last non-empty printed line that is not a confidence statement (a small model
        sometimes prints its ``Confidence: 0.5`` from the program): the line itself when it is one number (normalised
        with :func:`normalise_number`); else a stated answer in it (``Answer: 18``, ``The answer
        is 18``, :func:`corea.parsing.extract_answer`); else, in a line with words or ``=``,
        its last number (``Janet earns $18 a day`` -> ``18``); else the line as printed (``(2, 3)``,
        ``True``). Without output, ``answer_value`` the same way. None
        when both are empty.
    """
    lines = [ln.strip() for ln in (output or "").splitlines()
             if ln.strip() and not _CONFIDENCE_LINE.match(ln)]  # a printed "Confidence: 0.5"
    line = lines[-1] if lines else (answer_value or "").strip()
    if not line:
        return None
    whole = normalise_number(line)
    if whole is not None:
        return whole
    stated = extract_answer(line)
    if stated:
        return normalise_number(stated) or stated
    numbers = [t for t in _NUMBER_TOKEN.findall(line) if re.search(r"\d", t)]
    if numbers and re.search(r"[A-Za-z]{2,}|=", line):  # prose or "x = 5"; "(2, 3)" stays whole
        return normalise_number(numbers[-1]) or numbers[-1]
    return line


def run_pot_program(program: str, limits: SandboxLimits | None = None) -> PotOutcome:
    """Run ``program`` in the sandbox and read its answer. Never raises for the program: when
    no sandbox worker can start on this machine the outcome is ``error="unavailable"`` (logged
    once per call), so a caller keeps serving with the answer marked unusable."""
    try:
        result = run_program(program, limits)
    except SandboxUnavailable as exc:
        logger.warning("program of thought: %s", exc)
        return PotOutcome(program, None, None, "unavailable", f"the sandbox is unavailable: {exc}")
    if not result.ok:
        return PotOutcome(program, result, None, result.error, result.message)
    answer = answer_from_output(result.output, result.answer)
    if answer is None:
        return PotOutcome(program, result, None, "no_output", "the program printed no answer")
    return PotOutcome(program, result, answer, None, "")


def run_completion(completion: str, limits: SandboxLimits | None = None) -> PotOutcome:
    """:func:`extract_program` then :func:`run_pot_program`; ``error="no_program"`` when the
    reply holds no program (nothing is run). Never raises."""
    program = extract_program(completion)
    if program is None:
        return PotOutcome(None, None, None, "no_program", "no Python program found in the reply")
    return run_pot_program(program, limits)


def answers_agree(a: str | None, b: str | None) -> bool:
    """Whether two final answers (e.g. a tier's CoT and PoT answers) say the same, with the
    grader's equivalence (:func:`corea.grading.same_answer`: exact numbers, math-verify for
    expressions, percent and thousands separators as in grading), checked both ways so the order
    does not matter. None (an unusable answer) never agrees with anything."""
    if a is None or b is None or not a.strip() or not b.strip():
        return False
    return same_answer(a, b) or same_answer(b, a)
