"""The documentation stays an entry point plus a site: a short README, every page reachable from
the site's navigation, and the file lists newcomers follow naming files that exist.

`mkdocs build --strict` (make test) checks links and anchors inside the site; these check what it
cannot: the README's length and links, and paths written as code in CONTRIBUTING.md.
"""

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 300

# A path written as code: `services/intake/api.py`, `docs/events.md`; not `<name>` templates.
CODE_PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|md|yaml|yml|sh|toml|json))`")


def nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_readme_is_at_most_300_lines() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(listed)) == pages, {
        "not in the nav": sorted(set(pages) - set(listed)),
        "in the nav, no such page": sorted(set(listed) - set(pages)),
    }
    assert len(listed) == len(set(listed)), "a page is listed twice"


def test_readme_links_point_at_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    targets = [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets, "the README links nowhere"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing


def test_the_files_contributing_names_exist() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    named = set(CODE_PATH.findall(text))
    assert len(named) > 20, sorted(named)
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing
