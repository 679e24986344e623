"""The examples of the README and the documentation pages, as tests run them.

- ```python blocks run in order, one namespace per page, in a fresh working folder.
- ```console blocks are transcripts: each ``$ command`` line (a trailing ``\\`` continues it)
  runs in bash with the package's ``sdm`` first on PATH, in a fresh working folder holding
  ``my_photos/`` (a folder dataset: 8 classes x 4 JPEGs) and ``data/`` (a tiny CUB-200-2011
  tree, 16 classes x 4 images); the lines after it are its output (stdout and stderr
  together). A ``...`` line stands for any number of lines. Output that shows a traceback
  fails whatever is expected.
- Other blocks (```bash, ```yaml, ```text) are shown, not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w[\w-]*)[^\n]*\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def pages() -> list[Path]:
    """The README and every Markdown page of ``docs/``."""
    return [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").rglob("*.md"))]


def page_id(page: Path) -> str:
    return page.relative_to(REPOSITORY).as_posix()


def blocks(page: Path, language: str) -> list[str]:
    """The page's fenced blocks of one language, in order."""
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


@dataclass
class Command:
    line: str
    expected: list[str]


def transcript(block: str) -> list[Command]:
    """The ``$ command`` lines of a console block with the output lines after each."""
    commands: list[Command] = []
    lines = block.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            if not commands:
                raise ValueError(f"console block does not start with '$ ': {line!r}")
            commands[-1].expected.append(line.rstrip())
            index += 1
            continue
        command = line[2:]
        while command.endswith("\\"):
            index += 1
            command = command[:-1] + lines[index].strip()
        commands.append(Command(command, []))
        index += 1
    return commands


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; a ``...`` line in ``expected`` matches any number of lines."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(output_matches(rest, actual[start:]) for start in range(len(actual) + 1))
    return bool(actual) and actual[0].rstrip() == head and output_matches(rest, actual[1:])
