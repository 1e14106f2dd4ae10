"""`python -m tools.docs.reference --write | --check`: the generated reference pages (API, chart values,
`negrl` command) and the one command that regenerates them (`make docs-reference`).

`--check` (what the unit tests run) fails, naming the stale pages and the command, when a committed
page differs from what the code generates now, so the pages cannot drift from the spec, the chart or
the parsers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tools.docs.api_page import PAGE as API_PAGE
from tools.docs.api_page import api_page
from tools.docs.command_page import PAGE as COMMAND_PAGE
from tools.docs.command_page import command_page
from tools.docs.values_page import PAGE as VALUES_PAGE
from tools.docs.values_page import values_page

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "make docs-reference"
PAGES: dict[str, Callable[[], str]] = {API_PAGE: api_page, VALUES_PAGE: values_page, COMMAND_PAGE: command_page}


def stale_pages(pages: dict[str, str], repo: Path = REPO) -> list[str]:
    """The pages (repo-relative paths) whose committed text differs from `pages`' generated text."""
    return [path for path, text in pages.items()
            if not (repo / path).is_file() or (repo / path).read_text() != text]


def generated() -> dict[str, str]:
    return {path: render() for path, render in PAGES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.docs.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the committed pages")
    parser.add_argument("--check", action="store_true", help="fail if a committed page is stale")
    args = parser.parse_args(argv)
    pages = generated()
    if args.write:
        for path, text in pages.items():
            (REPO / path).parent.mkdir(parents=True, exist_ok=True)
            (REPO / path).write_text(text)
            print(f"wrote {path}")
    stale = stale_pages(pages, REPO)
    if args.check and stale:
        print(f"stale reference pages (run `{REGENERATE}`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
