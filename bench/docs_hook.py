"""MkDocs hook (mkdocs.yml `hooks:`): docs/benchmarks.md shows the latest `make bench` results.

BENCHMARKS.md stays the results file `make bench` writes; the page takes its generated part (up
to the hand-written "What bounds each figure") at build time, so the site never holds a copy that
fell behind.
"""

from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
PLACEHOLDER = "<!-- latest make bench results -->"
END = "## What bounds each figure"


def latest_results() -> str:
    text = RESULTS.read_text()
    text = text.split(END, 1)[0]
    lines = text.splitlines()[1:]  # its own title; the page has one
    # One level down, under the page's "Latest results" heading.
    return "\n".join("#" + line if line.startswith("#") else line for line in lines).strip() + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, latest_results())
    return markdown
