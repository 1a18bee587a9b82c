"""The manual (README.md and docs/*.md) agrees with the code.

- README's test command is the one `.ci/run` runs, and its first command block is the demo set-up.
- Every `fkp-live ...`, `fkp-train ...`, `torchrun ... -m train.ddp ...` and `python scripts/X.py ...`
  command written in the manual names only subcommands that exist and options that the command's own
  `--help` lists (the help is got by running the program), with a value where the option takes one
  and one of its choices where it has a fixed set.
- Every option named on its own in backticks exists in some command's help.
- The Python examples in README.md run.
- Every picture the manual shows exists, is under 1 MB and is named by a script in scripts/.
- The manual speaks of the product as it is: no words about how it was made.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("fkp-live", "fkp-train")
FENCE = re.compile(r"^```(\w*)\s*$")


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _blocks(page: Path):
    """(language, first line number, lines) of each fenced block of a page."""
    lang, start, lines = None, 0, []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        m = FENCE.match(line.strip())
        if m and lang is None:
            lang, start, lines = m.group(1) or "text", n + 1, []
        elif line.strip() == "```" and lang is not None:
            yield lang, start, lines
            lang = None
        elif lang is not None:
            lines.append(line)


def _prose(page: Path):
    """(line number, line) of a page outside its fenced blocks."""
    inside = False
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        if not inside:
            yield n, line


def _shell_lines(lines: list[str], start: int):
    """Join backslash continuations: (line number, logical line)."""
    buf, first = "", None
    for i, line in enumerate(lines):
        if first is None:
            first = start + i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield first, buf + line
        buf, first = "", None
    if buf:
        yield first, buf


def _segments(text: str):
    """The simple commands of a shell line (split at &&, ||, ;, |), each as a token list."""
    try:
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        tokens = list(lex)
    except ValueError as e:
        raise AssertionError(f"cannot split {text!r}: {e}")
    seg: list[str] = []
    for t in tokens:
        if t in ("&&", "||", ";", "|", "&", ";;"):
            if seg:
                yield seg
            seg = []
        else:
            seg.append(t)
    if seg:
        yield seg


def _command(tokens: list[str]):
    """(program, args) for the commands the manual checks, else None. Program is fkp-live,
    fkp-train, train.ddp or scripts/NAME.py."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # FKP_LIVE_X=1 fkp-live ...
        tokens = tokens[1:]
    if tokens and tokens[0] in ("nice", "time"):
        tokens = tokens[1:]
        while tokens and re.match(r"^-n$|^-?\d+$", tokens[0]):
            tokens = tokens[1:]
    if not tokens:
        return None
    prog = os.path.basename(tokens[0])
    if prog in PROGRAMS:
        return prog, tokens[1:]
    if prog == "torchrun" and "-m" in tokens:
        i = tokens.index("-m")
        if i + 1 < len(tokens) and tokens[i + 1] == "train.ddp":
            return "train.ddp", tokens[i + 2:]
    if re.match(r"^python(3(\.\d+)?)?$", prog) and len(tokens) > 1:
        if tokens[1].startswith("scripts/") and tokens[1].endswith(".py"):
            return tokens[1], tokens[2:]
        if tokens[1:3] == ["-m", "fkp_live.cli"]:
            return "fkp-live", tokens[3:]
        if tokens[1:3] == ["-m", "train.ddp"]:
            return "train.ddp", tokens[3:]
    return None


def manual_commands():
    """Every checked command of the manual: (where, program, args)."""
    found = []
    for page in PAGES:
        for lang, start, lines in _blocks(page):
            if lang not in ("bash", "sh", "shell"):
                continue
            for n, line in _shell_lines(lines, start):
                for seg in _segments(line):
                    cmd = _command(seg)
                    if cmd:
                        found.append((f"{_rel(page)}:{n}", *cmd))
        for n, line in _prose(page):
            for span in re.findall(r"`([^`]+)`", line):
                if re.match(r"^(\S*/)?(fkp-live|fkp-train|torchrun|python3?) ", span):
                    for seg in _segments(span):
                        cmd = _command(seg)
                        if cmd:
                            found.append((f"{_rel(page)}:{n}", *cmd))
    return found


def _entry_points() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def _argv(prog: str) -> list[str]:
    """How to run a program of the manual from this checkout, whatever is installed."""
    if prog in PROGRAMS:
        module, func = _entry_points()[prog].split(":")
        return [sys.executable, "-c", f"import sys; sys.argv[0] = {prog!r}; "
                                      f"from {module} import {func}; {func}()"]
    if prog == "train.ddp":
        return [sys.executable, "-m", "train.ddp"]
    return [sys.executable, str(ROOT / prog)]


HELPS: dict[tuple[str, tuple[str, ...]], tuple[int, str]] = {}


def help_of(prog: str, path: tuple[str, ...]) -> tuple[int, str]:
    """Exit status and text of `PROG PATH... --help`, run once per (prog, path)."""
    key = (prog, tuple(path))
    if key not in HELPS:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   COLUMNS="200")
        p = subprocess.run(_argv(prog) + list(path) + ["--help"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        HELPS[key] = (p.returncode, p.stdout + p.stderr)
    return HELPS[key]


OPTION_LINE = re.compile(r"^\s{1,8}(-{1,2}[A-Za-z0-9][\w-]*)")


def parse_help(text: str):
    """(usage line, {option: metavar or None}) from a click or argparse help text."""
    usage = next((ln for ln in text.splitlines() if ln.lower().startswith("usage:")), "")
    options: dict[str, str | None] = {}
    for line in text.splitlines():
        if not OPTION_LINE.match(line):
            continue
        head = re.split(r"\s{2,}", line.strip())[0]  # names and metavar, before the description
        names, metavar = [], None
        for part in re.split(r",\s*|\s+/\s+", head):
            words = part.split()
            if not words or not words[0].startswith("-"):
                continue
            names.append(words[0].split("=")[0])
            if len(words) > 1:
                metavar = " ".join(words[1:])
            elif "=" in words[0]:
                metavar = words[0].split("=", 1)[1]
        for name in names:
            options[name] = metavar
    return usage, options


def _usage_path(usage: str) -> list[str]:
    """The words of a usage line before its first placeholder: ['fkp-live', 'bench']."""
    words = usage.split()[1:]
    out = []
    for w in words:
        if w.startswith("[") or w.isupper() or w.startswith("-") or w.startswith("{"):
            break
        out.append(w)
    return out


def _takes_positional(usage: str) -> bool:
    words = usage.split()[1:]
    return any(re.match(r"^\[?[A-Z][A-Z0-9_.|]*\]?(\.\.\.)?$", w.strip("[]."))
               and w.strip("[].") not in ("OPTIONS",) for w in words)


def check_command(prog: str, args: list[str]) -> list[str]:
    """What is wrong with one command line of the manual (empty when it is right)."""
    problems = []
    path: list[str] = []
    rest = list(args)
    while rest and not rest[0].startswith("-"):
        rc, text = help_of(prog, tuple(path + [rest[0]]))
        up = _usage_path(parse_help(text)[0])
        if rc == 0 and up and up[-1] == rest[0]:
            path.append(rest.pop(0))
        else:
            break
    rc, text = help_of(prog, tuple(path))
    if rc != 0:
        return [f"`{prog} {' '.join(path)} --help` fails (exit {rc}): {text.strip()[-300:]}"]
    usage, options = parse_help(text)
    if not options:
        return [f"no options found in `{prog} {' '.join(path)} --help`"]
    positionals = []
    i = 0
    while i < len(rest):
        t = rest[i]
        if t == "--":
            positionals += rest[i + 1:]
            break
        if t.startswith("-") and len(t) > 1 and not re.match(r"^-\d", t):
            name, _, inline = t.partition("=")
            if name not in options:
                problems.append(f"`{prog} {' '.join(path)}` has no option {name}")
                i += 1
                continue
            metavar = options[name]
            if metavar is not None and not inline:
                if i + 1 >= len(rest):
                    problems.append(f"{name} needs a value ({metavar})")
                    break
                value = rest[i + 1]
                choices = re.fullmatch(r"\[([\w.-]+(?:\|[\w.-]+)+)\]", metavar)
                if choices and value not in choices.group(1).split("|"):
                    problems.append(f"{name} {value}: not one of {choices.group(1)}")
                i += 2
                continue
            i += 1
            continue
        positionals.append(t)
        i += 1
    if positionals and not _takes_positional(usage):
        problems.append(f"`{prog} {' '.join(path)}` takes no arguments, but the manual gives "
                        f"{positionals} (a subcommand that does not exist?)")
    if "COMMAND" in usage.split() and positionals:
        problems.append(f"`{prog} {' '.join(path)}` has no command {positionals[0]}")
    return problems


COMMANDS = manual_commands()


def test_the_manual_has_commands_of_each_program():
    progs = {p for _, p, _ in COMMANDS}
    assert {"fkp-live", "fkp-train", "train.ddp"} <= progs, progs
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("where,prog,args", COMMANDS, ids=[f"{w} {p} {' '.join(a)[:40]}" for w, p, a in COMMANDS])
def test_manual_command_matches_its_help(where, prog, args):
    problems = check_command(prog, args)
    assert not problems, f"{where}: {prog} {shlex.join(args)}\n  " + "\n  ".join(problems)


def test_the_checker_finds_wrong_commands():
    """The checker itself: a made-up option, a made-up subcommand and a bad choice are caught."""
    assert check_command("fkp-live", ["--video", "a.mp4", "--csv", "a.csv"]) == []
    assert check_command("fkp-live", ["--video", "a.mp4", "--no-such-option"])
    assert check_command("fkp-live", ["no-such-command", "--video", "a.mp4"])
    assert check_command("fkp-live", ["--device", "tpu", "--demo"])
    assert check_command("fkp-live", ["--camera"])  # a value is missing
    assert check_command("fkp-train", ["fit", "--task", "ibug68"]) == []
    assert check_command("fkp-train", ["fitt", "--task", "ibug68"])
    assert check_command("fkp-train", ["eval", "x.pt", "--epochs", "3"])
    assert check_command("train.ddp", ["--task", "ibug68", "--resume"]) == []


def _all_options() -> set[str]:
    for _, prog, args in COMMANDS:
        check_command(prog, args)  # runs each command's help once
    names: set[str] = set()
    for rc, text in HELPS.values():
        if rc == 0:
            names |= set(parse_help(text)[1])
    return names


def test_options_named_alone_exist():
    """`--option` in prose (alone, or with a placeholder value) is an option of some command."""
    known = _all_options()
    bad = []
    for page in PAGES:
        for n, line in _prose(page):
            for span in re.findall(r"`(--?[A-Za-z][\w-]*)(?:[ =][^`]*)?`", line):
                if span not in known:
                    bad.append(f"{_rel(page)}:{n}: {span}")
    assert not bad, "options the commands do not have:\n" + "\n".join(bad)


def _ci_command() -> str:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    runs = [ln for ln in lines if "pytest" in ln and not ln.startswith("#")]
    assert len(runs) == 1, runs
    return runs[0]


def test_readme_test_command_is_what_ci_runs():
    blocks = [lines for lang, _, lines in _blocks(ROOT / "README.md") if lang == "bash"]
    assert len(blocks) >= 2
    first, second = ([ln for ln in b if ln.strip()] for b in blocks[:2])
    assert second == [_ci_command()], "README's second command block must be .ci/run's test command"
    assert len(first) == 1 and first[0].startswith("python3 -m venv .venv && .venv/bin/pip install -q . && ")
    assert "fkp-live --demo" in first[0]


def test_readme_python_examples_run(tmp_path):
    blocks = ["\n".join(lines) for lang, _, lines in _blocks(ROOT / "README.md") if lang == "python"]
    assert blocks, "README has no Python example"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for code in blocks:
        p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, f"README example failed:\n{code}\n{p.stderr[-2000:]}"


def test_pictures_exist_are_small_and_have_a_script():
    scripts = "\n".join(p.read_text() for p in (ROOT / "scripts").glob("*") if p.is_file())
    shown = []
    for page in PAGES:
        for ref in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text()):
            shown.append((page, ref))
    assert shown
    for page, ref in shown:
        path = (page.parent / ref).resolve()
        assert path.is_file(), f"{_rel(page)} shows {ref}, which does not exist"
        assert path.stat().st_size < 1_000_000, f"{ref} is {path.stat().st_size} bytes"
        assert path.name in scripts, f"no script in scripts/ makes {path.name}"


HISTORY = re.compile(r"\bsessions?\b|\brounds? of\b|\bround \d|\bused to\b|\bpreviously\b|\bthis time\b"
                     r"|\bwas [0-9.]+|\bno longer\b|\bused to be\b|\bnow\b", re.IGNORECASE)


def test_manual_speaks_of_the_product_as_it_is():
    bad = []
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for m in HISTORY.finditer(line.replace("InferenceSession", "")):
                bad.append(f"{_rel(page)}:{n}: {m.group(0)!r} in {line.strip()[:100]}")
    assert not bad, "words about how the project was made:\n" + "\n".join(bad)


def test_readme_is_a_short_manual():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 360, f"README.md has {n} lines; the rest belongs in docs/"


def test_training_guide_holds_each_cards_chain():
    """docs/training.md names the training commands each shipped card holds (scripts/card_chains.py
    writes them; run it with --write docs/training.md after a model changes)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import card_chains
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = (ROOT / "docs" / "training.md").read_text()
    begin, end = page.index(card_chains.BEGIN), page.index(card_chains.END)
    written = page[begin + len(card_chains.BEGIN):end].strip()
    assert written == card_chains.markdown().strip(), (
        "the chains in docs/training.md differ from the cards: run "
        "`python scripts/card_chains.py --write docs/training.md`")
    assert len(card_chains.shipped_cards()) >= 4
