"""The README and the guides tell the truth: their Python blocks run, their links resolve, and
the quick start's test command is CI's."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A block whose first line starts so is a sketch that needs what a test cannot give.
SKETCH = "# needs:"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


# The README's blocks run in the fast tier; the guides' (a minute more) in the slow one.
RUNNABLE = [PAGES[0], *(pytest.param(p, marks=pytest.mark.slow) for p in PAGES[1:])]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a block writes land here
    for block in python_blocks(page.read_text()):
        if not block.startswith(SKETCH):
            exec(compile(block, str(page.relative_to(ROOT)), "exec"), {})


def test_the_readme_has_examples_and_every_guide_is_listed():
    assert len(python_blocks(README)) >= 5
    index = (ROOT / "docs" / "index.md").read_text()
    guides = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert guides <= set(re.findall(r"\]\(([\w-]+\.md)\)", index)), "docs/index.md misses a page"


def anchors(page: pathlib.Path) -> set[str]:
    """The heading anchors of a markdown page, as GitHub and MkDocs spell them."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    out = set()
    for title in re.findall(r"^#+ (.*)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for url in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", url):
            continue
        path, _, anchor = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: link {url!r}: no such file"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.name}: link {url!r}: no such heading"


def test_quick_start_is_two_lines_and_ci_runs_both_tiers_and_the_docs():
    quick = README.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in quick.splitlines() if line.strip()]
    assert len(lines) == 2
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[1] in ci
    assert "python3 -m pytest -m slow" in README and any("pytest -m slow" in c for c in ci)
    assert any("mkdocs build --strict" in c for c in ci)
