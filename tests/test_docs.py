"""The README and docs/ show only what runs: every `python train.py …` command line in them composes as
`train.py` would compose it, every `lightyard …` command line parses, every config key or group option
their prose names exists, and every link reaches its page and heading. Nothing is trained, exported or
registered: a dry run of each command, about 15 s for all of them.

How commands are found, the rules a page follows:
- In ```bash / ```sh / ```shell / ```console blocks every line is a command (a leading `$ ` is dropped,
  `# …` comments are stripped, `\\` continues a line, `&&`, `;` and `|` separate commands). In other
  fenced blocks only lines that start with `$ ` are commands; ```python blocks are not shell.
- A `$ ` line followed by a line `error: …` shows a mistake: its command must fail with exactly that line.
- A train command is any command with a `train.py` word (`python train.py`, `torchrun … train.py`, after
  `VAR=value` prefixes) or `make train ARGS="…"`; its overrides are the words after `train.py` (or ARGS).
  It must pass what `train.py` runs before anything else (`check_overrides`, Hydra's flags included, which
  must be among HYDRA_FLAGS); then, each sweep reduced to one point of its search space as a trial gets
  it, the full check of keys and values; and Hydra's own composition where it sets `hydra.*` keys, picks a
  launcher or sweeper, or runs on several nodes (then with `hydra.run.dir`, as `train.py` demands).
- A lightyard command starts with `lightyard` (after `VAR=value` prefixes) and must satisfy
  `lightyard.cli.build_parser()`, every flag spelled out (no abbreviations).
- Placeholders: `<anything>` is a value the reader picks (`logs/train/<run>/…`, `digits-cnn:<version>`)
  and is replaced by `anything` before parsing; in lightyard commands `[X]` marks X optional and is
  checked as if given; values in capitals (`DIR`, `REF`, `CKPT`, `HOST0`) are plain strings to both
  parsers and need no rule. Nothing is skipped: a command that cannot be checked this way must be
  rewritten, or added to UNCHECKED with its reason.
- In prose (outside fenced blocks), a backticked `key=value` or `key` whose first part is a top-level config
  key (`trainer.max_epochs=50`, `data.root`) must be a key of at least one config the groups compose
  (default, or with one option of a group picked), unless a part of it is in capitals (`trainer.NAME`: a
  placeholder) or it names a file (`model.onnx`); a backticked `group=option` must name existing options.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from lightyard.cli import build_parser
from lightyard.config import CONF_DIR, check_group_overrides, check_overrides, compose_train
from lightyard.errors import UserError
from lightyard.sweeps.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
# Hydra's command-line flags: name → how many arguments follow it
HYDRA_FLAGS = {"-m": 0, "--multirun": 0, "--cfg": 1, "-c": 1, "--resolve": 0, "--info": 0, "-i": 0}
CFG_CHOICES = {"job", "hydra", "all"}
# commands that cannot be checked by these rules, "page:line" → why (empty: every command is checked)
UNCHECKED: dict[str, str] = {}
# backticked names in prose that look like config keys but are files of a run or an artifact
FILE_SUFFIXES = {"onnx", "ts", "pt2", "pt", "ckpt", "json", "yaml", "log", "md", "txt", "png", "db", "py"}
_PLACEHOLDER = re.compile(r"<([^<>\n]+)>")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    where: str  # README.md:12
    text: str  # as the page shows it, continuations joined
    kind: str  # train | lightyard
    args: tuple[str, ...]
    error: str | None = None  # the `error: …` line a transcript shows after it

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def fenced_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number of the first line inside, info string, lines) of every fenced block."""
    blocks, lines, current = [], text.splitlines(), None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            current = (number + 1, stripped[3:].strip().lower(), [])
        elif current is not None and stripped.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def shell_lines(start: int, info: str, lines: list[str]) -> list[tuple[int, str, str | None]]:
    """(line number, command line, the `error:` line that follows it) of a block's commands."""
    found: list[tuple[int, str, str | None]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(lines):
        number, line = start + offset, raw.rstrip()
        if pending is not None:  # a continued line
            first, text = pending
            text = f"{text} {line.strip()}"
            if text.endswith("\\"):
                pending = (first, text[:-1].rstrip())
            else:
                found.append((first, text, None))
                pending = None
            continue
        if info not in SHELL_BLOCKS and not line.lstrip().startswith("$ "):
            follows_a_command = found and found[-1][0] == number - 1 and found[-1][2] is None
            if follows_a_command and line.startswith("error: "):  # a transcript: `$ command`, `error: …`
                found[-1] = (found[-1][0], found[-1][1], line.removeprefix("error: "))
            continue
        command = line.lstrip().removeprefix("$ ").strip()
        if not command or command.startswith("#"):
            continue
        if command.endswith("\\"):
            pending = (number, command[:-1].rstrip())
        else:
            found.append((number, command, None))
    return found


def split_commands(line: str) -> list[list[str]]:
    """Words of each command on a shell line: comments stripped, `<placeholder>`s filled in."""
    line = _PLACEHOLDER.sub(lambda m: m.group(1).replace(" ", "_"), line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [words for words in commands if words]


def classify(words: list[str]) -> tuple[str, list[str]] | None:
    """("train", overrides) or ("lightyard", arguments) for a command this test checks, else None."""
    env: dict[str, str] = {}
    while words and _ENV.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not words:
        return None
    if words[:2] == ["make", "train"]:
        assigned = [w.split("=", 1)[1] for w in words[2:] if w.startswith("ARGS=")]
        return "train", shlex.split(assigned[0] if assigned else env.get("ARGS", ""))
    if Path(words[0]).name == "lightyard":
        optional = [w[1:-1] if w.startswith("[") and w.endswith("]") else w for w in words[1:]]
        return "lightyard", [w for w in optional if w]
    for index, word in enumerate(words):
        if Path(word).name == "train.py":
            return "train", words[index + 1 :]
    return None


def page_commands(page: Path) -> list[Command]:
    name = page.relative_to(ROOT).as_posix()
    commands = []
    for start, info, lines in fenced_blocks(page.read_text()):
        if info.startswith("python"):
            continue
        for number, text, error in shell_lines(start, info, lines):
            for words in split_commands(text):
                if found := classify(words):
                    commands.append(Command(f"{name}:{number}", text, found[0], tuple(found[1]), error))
    return commands


COMMANDS = [command for page in PAGES for command in page_commands(page)]


def hydra_flags(args: tuple[str, ...], command: Command) -> tuple[list[str], bool]:
    """The overrides without Hydra's flags, and whether the command is a multirun."""
    overrides, multirun, rest = [], False, list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flag, _, value = arg.partition("=")
        if flag not in HYDRA_FLAGS:
            pytest.fail(f"{command}\n  {flag} is not one of Hydra's flags: {sorted(HYDRA_FLAGS)}")
        values = [value] if value else [rest.pop(0) for _ in range(HYDRA_FLAGS[flag]) if rest]
        if flag in ("--cfg", "-c") and (not values or values[0] not in CFG_CHOICES):
            pytest.fail(f"{command}\n  {flag} takes one of {sorted(CFG_CHOICES)}")
        multirun |= flag in ("-m", "--multirun")
    return overrides, multirun


def one_point(overrides: list[str]) -> list[str]:
    """The overrides of one trial: each sweep (`a,b`, `choice(…)`, `interval(…)`) at one of its values."""
    space = parse_space(None, overrides)
    return space.overrides(space.first_point())


def names_hydra(overrides: list[str]) -> bool:
    return any(o.lstrip("+~").startswith(("hydra.", "hydra/", "hparams_search=")) for o in overrides)


def check_train(command: Command, tmp_path: Path) -> None:
    args = list(command.args)
    try:
        check_overrides(args, CONF_DIR)  # what train.py runs before anything else
        overrides, multirun = hydra_flags(command.args, command)
        point = one_point(overrides)
        if point != args:  # flags or sweeps stopped the check short: keys and values of one trial
            check_overrides(point, CONF_DIR)
        # hydra.* keys, launchers, sweepers (check_overrides leaves them to Hydra), and multi-node runs
        cfg = (
            compose_train(point, tmp_path, keep_hydra=True)
            if names_hydra(point) or "trainer.num_nodes" in str(point)
            else None
        )
    except UserError as err:
        if command.error is not None:
            assert str(err) == command.error, (
                f"{command}\n  shows `error: {command.error}`\n  gives `error: {err}`"
            )
            return
        pytest.fail(f"{command}\n  error: {err}")
    except Exception as err:  # Hydra's own composition errors
        pytest.fail(f"{command}\n  {type(err).__name__}: {err}")
    if command.error is not None:
        pytest.fail(f"{command}\n  shows `error: {command.error}` but composes")
    if cfg is None or multirun or cfg.hydra.mode == "MULTIRUN":
        return
    given_run_dir = any(o.lstrip("+").startswith("hydra.run.dir=") for o in point)
    if cfg.trainer.get("num_nodes", 1) > 1 and not given_run_dir:  # as train.py's check_nodes_share_a_run_dir
        pytest.fail(f"{command}\n  train.py refuses trainer.num_nodes > 1 without hydra.run.dir=DIR")


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser and its subcommands' parsers without abbreviations: a page spells every flag out."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict(sub)
    return parser


def check_lightyard(command: Command) -> None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            strict(build_parser()).parse_args(list(command.args))
    except SystemExit as exit:
        if exit.code not in (0, None):
            pytest.fail(f"{command}\n  {stderr.getvalue().strip().splitlines()[-1]}")


_PASSED: set[tuple] = set()  # commands shown on several pages are checked once


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where} {c.text[:70]}")
def test_every_command_composes_or_parses(command: Command, tmp_path: Path) -> None:
    if command.where in UNCHECKED:
        pytest.skip(UNCHECKED[command.where])
    key = (command.kind, command.args, command.error)
    if key in _PASSED:
        return
    if command.kind == "train":
        check_train(command, tmp_path)
    else:
        check_lightyard(command)
    _PASSED.add(key)


def test_the_pages_have_commands() -> None:
    """The rules above find the pages' commands: an empty list would pass everything."""
    found = {Path(c.where.split(":")[0]).name for c in COMMANDS}
    assert "README.md" in found
    assert len(COMMANDS) >= 30
    assert any(c.kind == "lightyard" for c in COMMANDS)
    assert any(c.error for c in COMMANDS), "the transcript of a mistake (`$ …` then `error: …`) is checked"


GROUPS = sorted(
    p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*") if p.is_dir() and any(p.glob("*.yaml"))
)


def config_picks() -> list[list[str]]:
    """The default config, then one option of one group picked: a key exists if one of them has it.
    Experiments come last: they only set what the other groups already have."""
    picks: list[list[str]] = [[], ["hparams_search=optuna"]]
    first = ("hydra/launcher", "hydra/sweeper", "data", "model/net", "model", "callbacks")
    for group in sorted(GROUPS, key=lambda g: (first.index(g) if g in first else len(first), g)):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            if group == "callbacks":
                picks.append([f"callbacks=[default,{option}]"])
            elif group != "hydra":
                picks.append([f"{group}={option}"])
    return picks


_CONFIGS: list[DictConfig] = []
_PICKS = iter(config_picks())
_MISSING = object()


def configs() -> Iterator[DictConfig]:
    """The configs of `config_picks`, each composed the first time a key is looked up past the last."""
    yield from list(_CONFIGS)
    for pick in _PICKS:
        _CONFIGS.append(compose_train(pick, Path("/nonexistent/docs-check"), keep_hydra=True))
        yield _CONFIGS[-1]


def key_exists(key: str) -> bool:
    return any(
        OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING
        for cfg in configs()
    )


def prose_names(page: Path) -> list[tuple[int, str]]:
    """(line, backticked text) outside fenced blocks; a backticked span may run over a line break."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            line = ""
        lines.append("" if fenced else line)
    text = "\n".join(lines)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"`([^`]+)`", text)]


def prose_problem(name: str, top: set[str]) -> str | None:
    """What is wrong with one backticked `key=value`, `key` or `group=option`; None if nothing (or if it is
    not one of those)."""
    match = re.fullmatch(r"\+{0,2}(?P<key>[A-Za-z_][\w/]*(?:\.[A-Za-z_]\w*)*)(?:=(?P<value>.*))?", name)
    if not match or name.startswith("+"):  # `+key=value` adds a key: it need not exist
        return None
    key, value = match["key"], match["value"]
    if key in GROUPS and value is not None:  # data=imagefolder, callbacks=[…,quantize]
        options = [v.strip() for v in value.strip("[]").split(",") if v.strip() not in ("…", "...", "")]
        if not options or any(v.isupper() for v in options):  # `experiment=NAME`: a placeholder
            return None
        try:
            check_group_overrides([f"{key}=[{','.join(options)}]"], CONF_DIR)
        except UserError as err:
            return str(err)
        return None
    if "." not in key or key.split(".")[0] not in top or any(part.isupper() for part in key.split(".")):
        return None  # not a config key, or `trainer.NAME`: a placeholder
    if value is None and key.rsplit(".", 1)[-1] in FILE_SUFFIXES:
        return None  # model.onnx, export.json: files, not keys
    if key_exists(key):
        return None
    if value is None:
        return f"{key} is not a key of any config the groups compose"
    try:  # a key no composed config lists that the checks accept anyway
        check_overrides([name], CONF_DIR)
    except UserError as err:
        return str(err)
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_config_keys_named_in_prose_exist(page: Path) -> None:
    top = {*next(configs()).keys(), "optuna"}
    wrong = [
        f"{page.name}:{number}: `{text}`: {problem}"
        for number, text in prose_names(page)
        for word in text.split()
        if (problem := prose_problem(word.strip("'\""), top))
    ]
    assert not wrong, "\n".join(wrong)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            number, unique = 0, slug
            while unique in found:
                number += 1
                unique = f"{slug}-{number}"
            found.add(unique)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_reach_their_page_and_heading(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{page.name}:\n  " + "\n  ".join(broken)
