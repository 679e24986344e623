"""The README's Python examples run as they are written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})


def test_where_things_live_names_every_module_of_the_package():
    """Each module of ``src/sdm`` is in the README's "Where things live" table, by its own
    path or by a folder above it, and every path the table names exists."""
    package = README.parent / "src" / "sdm"
    section = README.read_text().split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(sdm/[\w/.]+)`", section))
    modules = [p.relative_to(package.parent).as_posix() for p in package.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")]
    missing = [m for m in modules
               if m not in named and not any(m.startswith(n) for n in named if n.endswith("/"))]
    assert missing == []
    assert sorted(n for n in named if not (package.parent / n).exists()) == []
