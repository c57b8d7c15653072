"""MkDocs hooks (``hooks:`` in ``mkdocs.yml``): the generated pages, and the link policy.

``on_config`` lists the results pages in the navigation; ``on_files`` adds the pages written
from the code at build time: the command-line reference (``reference/cli.md``), the
configuration reference (``reference/configuration.md``) and the results pages (``results/``,
with their figures); ``on_page_markdown`` fills the generated tables of hand-written pages
(``docsite.snippets``). A generator that cannot document something (a command that fails to
import, a config key without a meaning) stops the build with its reason. ``on_post_page`` applies ``docsite.links`` to every built page: a remote resource or a
link to a host that is not allowed is a warning, which ``mkdocs build --strict`` makes an error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # MkDocs loads this file by path; its package sits beside it
    sys.path.insert(0, str(ROOT))

from mkdocs.exceptions import PluginError  # noqa: E402
from mkdocs.structure.files import File, Files  # noqa: E402

from docsite import cli_reference, config_reference, links, results_pages, snippets  # noqa: E402

log = logging.getLogger("mkdocs.docsite")

GENERATED: dict[str, Any] = {
    "reference/cli.md": cli_reference.page,
    "reference/configuration.md": config_reference.page,
}


def on_config(config: Any) -> Any:
    """The "Results" entry of the navigation becomes the index and one entry per results file."""
    pages, _ = results_pages.collect(ROOT)
    entries = [f"{results_pages.SITE_FOLDER}/index.md", *({p.title.replace("`", ""): p.uri} for p in pages)]
    for item in config["nav"] or []:
        if isinstance(item, dict) and item.get("Results") == entries[0]:
            item["Results"] = entries
    return config


def on_files(files: Files, config: Any) -> Files:
    for uri, generate in GENERATED.items():
        try:
            content = generate()
        except (cli_reference.ReferenceError, config_reference.ReferenceError) as err:
            raise PluginError(f"{uri}: {err}") from None
        files.append(File.generated(config, uri, content=content))
    pages, unplaced = results_pages.collect(ROOT)
    files.append(File.generated(config, f"{results_pages.SITE_FOLDER}/index.md",
                                content=results_pages.index_markdown(ROOT, pages, unplaced)))
    for page in pages:
        files.append(File.generated(config, page.uri,
                                    content=results_pages.page_markdown(ROOT, page)))
        for figure in page.figures:
            files.append(File.generated(config, results_pages.figure_uri(ROOT, figure),
                                        abs_src_path=str(figure)))
    for figure in unplaced:
        files.append(File.generated(config, results_pages.figure_uri(ROOT, figure),
                                    abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    try:
        return snippets.expand(markdown)
    except snippets.SnippetError as err:
        raise PluginError(f"{page.file.src_uri}: {err}") from None


def on_post_page(output: str, page: Any, config: Any) -> str:
    for problem in links.problems(output):
        log.warning("%s: %s", page.file.src_uri, problem)
    return output
