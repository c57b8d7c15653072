"""The external-link policy of the site, checked on every built page.

The site must open offline and its build must need no network, so:

- no page may load anything from another host (a ``src``, a stylesheet or a script of another
  host: ``REMOTE_RESOURCE``);
- a link to another host is allowed only to a host of ``ALLOWED_HOSTS`` (where the datasets,
  papers and reference code are published); anything else is reported, so a new one is a
  deliberate change of this list.

Internal links and anchors are checked by MkDocs itself (``validation`` in ``mkdocs.yml``,
warnings that ``--strict`` turns into errors). Nothing here fetches a URL.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

ALLOWED_HOSTS: frozenset[str] = frozenset({
    "github.com",
    "zenodo.org",
    "arxiv.org",
    "pypi.org",
    "www.mkdocs.org",
    "squidfunk.github.io",
    "mkdocstrings.github.io",
})


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        elif tag == "link" and "href" in values:
            rel = values.get("rel", "")
            (self.resources if re.search(r"stylesheet|preload|icon|import", rel)
             else self.links).append(values["href"])
        for name in ("src", "data-src", "srcset"):
            if name in values:
                self.resources.append(values[name])


def _remote(url: str) -> bool:
    return url.startswith("//") or urlsplit(url).scheme in ("http", "https")


def problems(html: str) -> list[str]:
    """What the policy refuses in one page's HTML: remote resources and links to hosts that
    are not allowed."""
    collector = _Collector()
    collector.feed(html)
    out = [f"loads a remote resource: {url}" for url in collector.resources if _remote(url)]
    for url in collector.links:
        if _remote(url):
            host = urlsplit(url if "://" in url else "https:" + url).hostname or ""
            if host not in ALLOWED_HOSTS:
                out.append(f"links to {host} (not in docsite/links.py ALLOWED_HOSTS): {url}")
    return out
