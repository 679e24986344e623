"""The documentation's pages keep their promises: the architecture page names every module of
the package, and the README stays a landing page."""

import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_architecture_page_names_every_module_of_the_package():
    """Each module of ``src/sdm`` is on docs/architecture.md, by its own path or by a folder
    above it, and every path the page names exists."""
    package = REPOSITORY / "src" / "sdm"
    named = set(re.findall(r"`(sdm/[\w/.]+)`", (REPOSITORY / "docs/architecture.md").read_text()))
    modules = [p.relative_to(package.parent).as_posix() for p in package.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")]
    missing = [m for m in modules
               if m not in named and not any(m.startswith(n) for n in named if n.endswith("/"))]
    assert missing == []
    assert sorted(n for n in named if not (package.parent / n).exists()) == []


def test_the_readme_is_a_landing_page_whose_links_resolve():
    readme = (REPOSITORY / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert "docs/results/index.md" in local
    assert [link for link in local if not (REPOSITORY / link).exists()] == []
