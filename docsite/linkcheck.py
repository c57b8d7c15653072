"""Check the links of a built site: ``python -m docsite.linkcheck SITE_DIR``.

Every ``href`` and ``src`` of every page is resolved without any request: a relative link must
name a file of the site, and its ``#fragment`` an ``id`` (or ``name``) in that file; an external
link must follow ``docsite.links`` (no remote resource, only allowed hosts). MkDocs checks the
links written in Markdown while it builds; this checks the built HTML, so links made by the
theme, by mkdocstrings and by raw HTML in a page are covered too. Prints each problem and the
external hosts linked, and exits 1 when there is a problem.
"""

from __future__ import annotations

import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from docsite.links import problems as policy_problems


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name in ("id", "name") if tag != "meta" else ():
            if values.get(name):
                self.ids.add(values[name])
        for name in ("href", "src"):
            if name in values:
                self.targets.append(values[name])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def check(site: Path) -> tuple[list[str], Counter[str]]:
    """Problems of the site's links, and how often each external host is linked."""
    pages = {path: _parse(path) for path in sorted(site.rglob("*.html"))}
    out: list[str] = []
    hosts: Counter[str] = Counter()
    for path, page in pages.items():
        where = path.relative_to(site).as_posix()
        out += [f"{where}: {problem}" for problem in
                policy_problems(path.read_text(encoding="utf-8"))]
        for target in page.targets:
            parts = urlsplit(target)
            if parts.scheme in ("http", "https") or target.startswith("//"):
                hosts[parts.hostname or ""] += 1
                continue
            if parts.scheme or not target:  # mailto:, data:, javascript:
                continue
            if not parts.path:
                file = path
            elif parts.path.startswith("/"):  # from the site's root (the 404 page's links)
                file = site / unquote(parts.path).lstrip("/")
            else:
                file = (path.parent / unquote(parts.path)).resolve()
            if file.is_dir():
                file = file / "index.html"
            if not file.is_file():
                out.append(f"{where}: broken link {target}")
                continue
            fragment = unquote(parts.fragment)
            if fragment and file.suffix == ".html":
                ids = pages[file].ids if file in pages else _parse(file).ids
                if fragment not in ids:
                    out.append(f"{where}: no anchor #{fragment} in "
                               f"{file.relative_to(site.resolve()).as_posix()}")
    return out, hosts


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m docsite.linkcheck SITE_DIR", file=sys.stderr)
        return 2
    site = Path(argv[0]).resolve()
    found, hosts = check(site)
    for problem in found:
        print(problem)
    listed = ", ".join(f"{host} ({n})" for host, n in sorted(hosts.items()))
    print(f"{len(list(site.rglob('*.html')))} pages checked; external hosts linked: "
          f"{listed or 'none'}; {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
