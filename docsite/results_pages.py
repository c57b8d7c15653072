"""The results pages: every ``benchmarks/results/*.md`` as a page, its figures beside it.

The measured figures live in ``benchmarks/results/`` (each file written by the script whose
command it records); the site shows those files as they are, so a rerun of a benchmark updates
the site at its next build and no figure is copied into hand-written pages.

A figure (``*.png`` anywhere under the results folder) is shown on the page of the result it
belongs to: the page whose file name its path starts with (``continual_low_lr.png`` ->
``continual.md``), else the page whose name starts with its first path component
(``drift/tent-sweep.png`` -> ``drift_sweep.md``); a figure that belongs to no page is shown on
the index page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from docsite.markdown import code, escape, table

RESULTS = Path("benchmarks") / "results"
SITE_FOLDER = "results"


@dataclass
class ResultPage:
    """One results file and the figures shown with it."""

    source: Path
    figures: list[Path] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"{SITE_FOLDER}/{self.source.stem}.md"

    @property
    def title(self) -> str:
        for line in self.source.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
        return self.source.stem


def collect(root: Path) -> tuple[list[ResultPage], list[Path]]:
    """The results pages under ``root`` (the repository) and the figures of no page."""
    folder = root / RESULTS
    pages = [ResultPage(path) for path in sorted(folder.glob("*.md"))]
    unplaced = []
    for figure in sorted(folder.rglob("*.png")):
        relative = figure.relative_to(folder).as_posix()
        first = relative.split("/")[0].split(".")[0]
        owner = next((p for p in pages if relative.startswith(p.source.stem)), None) or \
            next((p for p in pages if p.source.stem.startswith(first)), None)
        if owner is None:
            unplaced.append(figure)
        else:
            owner.figures.append(figure)
    return pages, unplaced


def figure_uri(root: Path, figure: Path) -> str:
    """Where a figure lands in the site."""
    return f"{SITE_FOLDER}/{figure.relative_to(root / RESULTS).as_posix()}"


def _figure_lines(root: Path, figures: list[Path]) -> list[str]:
    lines = []
    for figure in figures:
        target = figure.relative_to(root / RESULTS).as_posix()
        lines += [f"![{escape(target)}]({target})", ""]
    return lines


def page_markdown(root: Path, page: ResultPage) -> str:
    """A results file as a page: the file itself, then where it came from and its figures."""
    text = page.source.read_text(encoding="utf-8").rstrip() + "\n\n"
    relative = page.source.relative_to(root).as_posix()
    text += f"---\n\nThis page is the file {code(relative)}, shown as it is.\n"
    if page.figures:
        text += "\n## Figures\n\n" + "\n".join(_figure_lines(root, page.figures))
    return text


def index_markdown(root: Path, pages: list[ResultPage], unplaced: list[Path]) -> str:
    """The results index: every results page with its title."""
    rows = [(f"[{escape(p.title)}]({p.source.stem}.md)", code(p.source.name)) for p in pages]
    lines = [
        "# Results",
        "",
        "Every measurement the project reports, one page per file of `benchmarks/results/`. "
        "Each file was written by the script in `benchmarks/` whose exact command it records, "
        "with its date, machine and versions; ratios compare runs made in the same sitting. "
        "Rerunning a script rewrites its file, and the next build of this site shows it. "
        "Tests assert behaviour, never these figures.",
        "",
        *table(("result", "file"), rows),
        "",
    ]
    if unplaced:
        lines += ["## Other figures", "", *_figure_lines(root, unplaced)]
    return "\n".join(lines) + "\n"
