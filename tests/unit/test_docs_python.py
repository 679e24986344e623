"""The Python examples of the README and the documentation pages run as written."""

import pytest

from docs_examples import blocks, page_id, pages

PAGES = [page for page in pages() if blocks(page, "python")]


def test_the_readme_and_the_docs_have_python_examples():
    assert {page_id(page) for page in PAGES} >= {"README.md", "docs/getting-started.md"}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for index, block in enumerate(blocks(page, "python")):
        exec(compile(block, f"{page_id(page)} python example {index}", "exec"), namespace)
