"""The documentation's commands and links still work as written.

Reads README.md and docs/*.md and checks:

- every shell command in a ```bash code block that calls ``corea <command>`` or
  ``python -m corea <command>`` parses with the real ``corea`` parser (unknown commands, flags or
  missing arguments fail); a command with a placeholder (``...``, ``<name>``) and every inline
  ``corea ...`` span of the prose have each ``--flag`` checked against the command's ``--help``;
- the other commands of those blocks name files that exist (``python bench/x.py``,
  ``python -m train.x``, ``bash scripts/x.sh``, ``config/``, ``data/generations/`` ... paths)
  and, for argparse scripts, use flags their source declares;
- the one-release aliases ``python -m corea.{evaluate,report,beforeafter,calibrate}`` appear in
  no code block (they are removed);
- the cheap commands that need no model and write nothing are run (``--help``, ``corea
  beforeafter`` on committed generations); every other command is skipped with its reason;
- README.md is a front page (≤ 250 lines) that keeps CI's test command, and every relative link
  (and ``#anchor``) in README.md and docs/*.md resolves.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from corea import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEST_COMMAND = "bash scripts/install.sh --test && python -m pytest -q"
SHELL_LANGS = {"bash", "sh", "shell"}
OPERATORS = {"|", "||", "&&", ";", "&"}
PYTHONS = {"python", "python3", "python3.11"}
REMOVED_ALIASES = {"corea.evaluate", "corea.report", "corea.beforeafter", "corea.calibrate"}
#: committed folders whose paths a command may name (runs/ and the like are made by commands)
COMMITTED_ROOTS = ("config/", "train/", "data/generations/", "data/adapters/", "corea/", "bench/",
                   "scripts/", "assets/", "tests/")
#: why a documented ``corea`` command is not run here (the ones not listed are run)
NOT_RUN = {
    "ask": "needs the models (llama.cpp weights)",
    "serve": "starts a server that runs until stopped",
    "evaluate": "generates with the models, or (--summarize-only) reads a runs/ folder that "
                "only exists after an evaluation",
    "report": "reads a runs/ folder that only exists after an evaluation",
    "calibrate": "fits from runs/ folders or writes a shipped artifact (--out)",
    "probe": "writes a shipped artifact (--out)",
    "heldout": "fits every signal on 602 train items (minutes) and rewrites committed reports",
    "lora-gguf": "converts a trained checkpoint that is not committed",
    "pack": "rewrites a run folder's files",
    "push-ratings": "pushes to a Hugging Face dataset repository (no Hub here)",
}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"^--[A-Za-z][\w-]*")


@dataclass(frozen=True)
class Command:
    """One command as documented: the page, its line there, and its words (shell-split)."""

    page: str
    line: int
    argv: tuple[str, ...]
    inline: bool = False  # an inline `corea ...` span of the prose (possibly incomplete)

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.argv)}"


def split_commands(text: str) -> list[list[str]]:
    """Shell words of each simple command in ``text`` (one line; comments dropped)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    out: list[list[str]] = [[]]
    for word in lex:
        if word in OPERATORS:
            out.append([])
        else:
            out[-1].append(word)
    commands = []
    for words in out:
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # VAR=value prefix
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def strip_fences(text: str) -> str:
    """``text`` with fenced code blocks blanked (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def documented_commands() -> list[Command]:
    """Every shell command of the pages' bash blocks, and every inline ``corea ...`` span."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        for block in FENCE.finditer(text):
            if block.group(1) not in SHELL_LANGS:
                continue
            first = text.count("\n", 0, block.start(2)) + 1
            start, chunk = 0, ""
            for i, line in enumerate(block.group(2).split("\n")):
                start, chunk = (start, chunk + "\n" + line) if chunk else (i, line)
                if chunk.endswith("\\"):  # a continuation line: the command goes on
                    chunk = chunk[:-1] + " "
                    continue
                try:  # a quoted string may go on over the next lines
                    commands = split_commands(chunk)
                except ValueError:
                    continue
                found += [Command(name, first + start, tuple(argv)) for argv in commands]
                chunk = ""
            assert not chunk, f"{name}:{first + start}: unclosed quotation"
        prose = strip_fences(text)
        for span in re.finditer(r"`((?:corea|python -m corea)\s[^`]+)`", prose):
            line = prose.count("\n", 0, span.start()) + 1
            for argv in split_commands(span.group(1)):
                found.append(Command(name, line, tuple(argv), inline=True))
    return found


def corea_args(argv: tuple[str, ...]) -> list[str] | None:
    """The arguments after ``corea`` / ``python -m corea``, or None for another program."""
    if argv[0] == "corea":
        return list(argv[1:])
    if argv[0] in PYTHONS and argv[1:3] == ("-m", "corea"):
        return list(argv[3:])
    return None


def table_row(line: str) -> list[str]:
    """The cells of a markdown table row, stripped ([] for any other line)."""
    return [c.strip() for c in line.strip().split("|")[1:-1]] if line.startswith("|") else []


def has_placeholder(args: list[str]) -> bool:
    return any(a == "..." or re.search(r"<[^>]*>|\.\.\.", a) for a in args)


def flags(args: list[str]) -> list[str]:
    return [m.group(0) for a in args if (m := FLAG.match(a))]


@functools.lru_cache(maxsize=None)
def parser():
    return cli.build_parser()


@functools.lru_cache(maxsize=None)
def help_text(command: str) -> str:
    """``corea <command> --help`` (cached), or "" for an unknown command."""
    if command not in cli.COMMANDS:
        return ""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser().parse_args([command, "--help"])
    return out.getvalue()


def parse_error(args: list[str]) -> str | None:
    """The parser's complaint about ``corea <args>``, or None when it parses."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser().parse_args(args)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip()
    return None


def check_corea(cmd: Command, args: list[str]) -> list[str]:
    """Problems with one documented ``corea`` command (empty when it is valid)."""
    if not args or args[0] in {"--help", "-h"}:
        return []
    sub = args[0]
    if cmd.inline and "<" in sub:
        return []  # `corea <command>`: a pattern, not a command
    if sub not in cli.COMMANDS:
        return [f"unknown command {sub!r} (corea has {', '.join(cli.COMMANDS)})"]
    if cmd.inline or has_placeholder(args):
        helptext = help_text(sub)
        return [f"{flag} is not an option of `corea {sub}`" for flag in flags(args[1:])
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helptext)]
    error = parse_error(args)
    return [error] if error else []


#: flags whose value is a path the command writes: it need not exist before the command runs
OUTPUT_FLAGS = ("--run-dir", "--out", "--md", "--json", "--output_dir")


def input_words(args: list[str]) -> list[str]:
    """``args`` without the values of :data:`OUTPUT_FLAGS` (``--out X`` and ``--out=X``)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in OUTPUT_FLAGS:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in OUTPUT_FLAGS)):
            out.append(a)
    return out


def check_path(word: str) -> list[str]:
    """A committed path the command reads must exist (``--flag=path`` and ``NAME=path`` too)."""
    value = word.split("=", 1)[-1]
    if value.startswith(COMMITTED_ROOTS) and not has_placeholder([value]):
        if not (ROOT / value).exists():
            return [f"{value} does not exist"]
    return []


def check_script(path: Path, used: list[str]) -> list[str]:
    """The script exists and declares every flag it is called with (argparse, in its source)."""
    if not path.exists():
        return [f"{path.relative_to(ROOT)} does not exist"]
    source = path.read_text(encoding="utf-8")
    return [f"{flag} is not declared in {path.relative_to(ROOT)}" for flag in used
            if f'"{flag}"' not in source and f"'{flag}'" not in source and f"{flag})" not in source]


#: python -m modules whose flags come from TRL's TrlParser (dataclass fields of TRL and
#: transformers): their module and --config file are checked, their other flags are not, because
#: importing TRL to list them takes many seconds.
TRL_MODULES = {"train.grpo", "train.confidence"}
#: python -m modules that pass the flags they do not declare on to one of :data:`TRL_MODULES`
#: (argparse ``parse_known_args``): their own flags are not told apart from the trainer's here
FORWARDING_MODULES = {"train.crossfit", "train.gpu_run"}


def check_other(cmd: Command) -> list[str]:
    """Problems with a documented command that is not ``corea``."""
    argv = list(cmd.argv)
    problems = [p for word in input_words(argv[1:]) for p in check_path(word)]
    if argv[0] in PYTHONS and len(argv) > 2 and argv[1] == "-m":
        module = argv[2]
        if module in REMOVED_ALIASES:
            return problems + [f"python -m {module} was removed: use `corea "
                               f"{module.split('.', 1)[1]}`"]
        path = ROOT / (module.replace(".", "/") + ".py")
        if module.split(".")[0] in {"train", "corea", "bench"}:
            if module in TRL_MODULES | FORWARDING_MODULES:
                problems += [] if path.exists() else [f"{path.relative_to(ROOT)} does not exist"]
            else:
                problems += check_script(path, flags(argv[3:]))
    elif argv[0] in PYTHONS and len(argv) > 1 and argv[1].endswith(".py"):
        problems += check_script(ROOT / argv[1], flags(argv[2:]))
    elif argv[0] == "bash" and len(argv) > 1 and argv[1].endswith(".sh"):
        problems += check_script(ROOT / argv[1], flags(argv[2:]))
    return problems


COMMANDS = documented_commands()


def test_the_pages_have_commands():
    """The extraction finds what it should (a guard against a regex that matches nothing)."""
    assert len([c for c in COMMANDS if not c.inline]) > 30
    assert any(corea_args(c.argv) for c in COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_documented_command_is_valid(cmd: Command):
    args = corea_args(cmd.argv)
    problems = check_corea(cmd, args) if args is not None else check_other(cmd)
    if args is not None:
        problems += [p for word in input_words(args) for p in check_path(word)]
    assert not problems, f"{cmd}: " + "; ".join(problems)


def run_reason(cmd: Command) -> str | None:
    """Why a documented command is not run here, or None to run it."""
    args = corea_args(cmd.argv)
    if args is None:
        return "not a corea command (its files and flags are checked above)"
    if cmd.inline or has_placeholder(args):
        return "an inline or placeholder form (its flags are checked above)"
    if not args or "--help" in args or "-h" in args:
        return None
    if args[0] == "beforeafter" and "--json" not in args:
        if all((ROOT / a).is_dir() for a in args[1:] if not a.startswith("-")):
            return None  # reads two committed run folders, writes nothing
        return "reads runs/ folders that only exist after an evaluation"
    return NOT_RUN.get(args[0], "not known to be cheap")


RUNNABLE = [c for c in COMMANDS if corea_args(c.argv) is not None and not c.inline]


@pytest.mark.parametrize("cmd", RUNNABLE, ids=str)
def test_cheap_documented_command_runs(cmd: Command, monkeypatch, capsys):
    reason = run_reason(cmd)
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(ROOT)
    args = corea_args(cmd.argv)
    fewer_resamples = ["--n-boot", "100"] if args[0] == "beforeafter" else []  # seconds, not 15
    try:
        status = cli.main(args + fewer_resamples)
    except SystemExit as exc:  # --help
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 0, f"{cmd}: exit {status}\n{err}"
    assert out.strip()
    if args[0] == "beforeafter":  # the page shows what the command prints (point estimates)
        page = (ROOT / cmd.page).read_text(encoding="utf-8")
        shown = {tuple(table_row(line)[:3]) for line in page.splitlines()}
        rows = [tuple(table_row(line)[:3]) for line in out.splitlines()
                if table_row(line) and not line.startswith(("| SLM metric", "|---"))]
        assert rows
        missing = [row for row in rows if row not in shown]
        assert not missing, f"{cmd}: the page lacks these rows (metric, before, after): {missing}"
        changes = next(line for line in out.splitlines() if line.startswith("pass@1 changes"))
        assert changes in page


def test_removed_aliases_are_documented_as_removed():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Removed in this release" in text
    for module in REMOVED_ALIASES:
        assert module in text and f"corea {module.split('.', 1)[1]}" in text


def test_readme_is_a_front_page_with_cis_test_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    blocks = [m.group(2) for m in FENCE.finditer(text) if m.group(1) in SHELL_LANGS]
    assert any(TEST_COMMAND in b.splitlines() for b in blocks), "CI runs README's test command"
    assert (ROOT / "assets" / "screenshot.png").exists() and "](assets/screenshot.png)" in text


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text, lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"[`*_]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of a markdown file (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in strip_fences(page.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"^#{1,6} +(.*?)#*\s*$", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every relative link outside code (inline code spans dropped)."""
    text = strip_fences(page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), text)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)
            if not re.match(r"^[a-z]+:", m.group(1))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    broken = []
    for line, target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"line {line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"line {line}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, "\n".join(broken)
