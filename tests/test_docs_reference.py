"""The manual's generated references cover the code: every command and option of the click
tree, every config section, ``[run]`` key and plugin parameter of the schema; and the link
checks of the built site find what they must.

The command tree and the schema are walked here on their own (the entry points read from the
installed metadata, every option's flags from click, every accepted parameter from
``config_schema.plugin_parameters``) and compared with the pages ``docsite`` generates, section
by section. A third-party distribution (fabricated metadata with entry-point lines) shows that
a newly installed plugin's command and parameters appear without any change to the docs.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import click
import pytest

from ttabench import registry
from ttabench.cli import BUILTIN_COMMANDS, main
from ttabench.config_schema import (
    EXECUTORS,
    PLUGIN_SECTIONS,
    RUN_KEYS,
    SECTIONS,
    check_layer,
    plugin_parameters,
)
from ttabench.errors import TTABenchError
from ttabench.runner.config import Layer
from ttabench.spec import RUN_OPTIONS
from fake_distribution import installed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docsite import (  # noqa: E402
    cli_reference,
    config_reference,
    griffe_docstrings,
    linkcheck,
    links,
    results_pages,
    snippets,
)


def sections(markdown: str, level: str) -> dict[str, str]:
    """The page split at headings of ``level`` (``"##"``): heading text -> its body."""
    out: dict[str, str] = {}
    pattern = re.compile(rf"^{level} (.+?)(?: \{{#[^}}]+\}})?$", re.MULTILINE)
    matches = list(pattern.finditer(markdown))
    for match, following in zip(matches, [*matches[1:], None]):
        end = following.start() if following else len(markdown)
        out[match.group(1).strip("`")] = markdown[match.end():end]
    return out


def table_rows(body: str) -> dict[str, list[str]]:
    """Rows of the Markdown tables in ``body``: first cell (code span removed) -> cells."""
    rows = {}
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("| key |"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            rows[cells[0].strip("`")] = cells
    return rows


def flags(command: click.Command) -> list[str]:
    return [flag for p in command.params if isinstance(p, click.Option)
            for flag in (*p.opts, *p.secondary_opts)]


TOY_PLUGIN = '''
import click
from ttabench.api import EstimateResult, StaticEstimator


@click.command("toy-report")
@click.option("--widgets", type=int, default=3, help="How many widgets.")
@click.option("--shiny/--dull", default=False, help="Polish them.")
def toy_report(widgets, shiny):
    """Report on the toy widgets."""


class ToyScore(StaticEstimator):
    """A toy score: the mean top logit, scaled."""

    name = "toy-score"

    def __init__(self, scale: float = 2.5, label: str = "toy") -> None:
        self.scale, self.label = scale, label

    def estimate(self, target, source_val):
        value = float(target.logits.max(1).values.mean()) * self.scale
        return EstimateResult(value=value, estimate=None)
'''


@pytest.fixture
def toy_dist(tmp_path, monkeypatch):
    """An installed distribution ``toydocs`` registering a command and an estimator."""
    with installed(monkeypatch, tmp_path, "toydocs", "0.3", {
            "ttabench.commands": {"toy-report": "toydocs_plugin:toy_report"},
            "ttabench.estimators": {"toy-score": "toydocs_plugin:ToyScore"}},
            {"toydocs_plugin": TOY_PLUGIN}) as folder:
        yield folder


# --------------------------------------------------------------------------- the CLI reference


def test_cli_reference_covers_every_command_and_option():
    page = cli_reference.page()
    documented = sections(page, "##")
    installed = {ep.name for ep in importlib.metadata.entry_points(group="ttabench.commands")}
    expected = {"ls", "validate", *BUILTIN_COMMANDS, *installed}
    assert "analyze" in installed and "continual" in BUILTIN_COMMANDS  # the plugin's, the host's
    assert {f"ttabench {name}" for name in expected} <= set(documented)
    ctx = click.Context(main, info_name="ttabench")
    for name in expected:
        command = main.get_command(ctx, name)
        body = documented[f"ttabench {name}"]
        missing = [flag for flag in flags(command) if not re.search(
            rf"(?<![\w-]){re.escape(flag)}(?![\w-])", body)]
        assert not missing, f"ttabench {name}: {missing} not documented"
        assert (command.help or "").split("\n")[0].split(".")[0] in body
    for flag in flags(main):
        assert flag in documented["ttabench"]
    assert "distribution `ttabench-enigma`" in documented["ttabench analyze"]


def test_a_newly_installed_plugin_command_is_documented(toy_dist):
    documented = sections(cli_reference.page(), "##")
    body = documented["ttabench toy-report"]
    assert "Report on the toy widgets." in body
    assert "distribution `toydocs`" in body
    rows = table_rows(body)
    assert "How many widgets." in rows["--widgets INTEGER"][1]
    assert "--shiny / --dull" in rows


def test_a_command_that_fails_to_load_stops_the_build(tmp_path, monkeypatch):
    with installed(monkeypatch, tmp_path, "brokencmd", "0.1", {"ttabench.commands": {
            "broken": "brokencmd:cmd"}}, {"brokencmd": "raise ImportError('needs libfoo')\n"}):
        with pytest.raises(cli_reference.ReferenceError, match="'broken'.*libfoo"):
            cli_reference.page()


def test_markdown_cells_keep_pipes_and_specials_readable():
    from docsite.markdown import code, escape

    assert code("[tent|eta]") == "<code>[tent&#124;eta]</code>"
    assert escape("globs 'fog-*' under <data_dir>, `a|b` kept") == \
        r"globs 'fog-\*' under &lt;data\_dir&gt;, <code>a&#124;b</code> kept"


# --------------------------------------------------------------------------- the config reference


def test_config_reference_covers_every_section_and_run_key():
    page = config_reference.page()
    documented = sections(page, "##")
    top = table_rows(page.split("\n## ")[0])
    assert {f"[{s}]" for s in (*SECTIONS, "quick")} == set(top) - {"section"}
    run_rows = table_rows(documented["[run]"])
    assert set(run_rows) == {".".join(o.path) for o in RUN_OPTIONS}
    assert ({k for k in RUN_KEYS if k != "stream"} | {f"stream.{k}" for k in RUN_KEYS["stream"]}
            == set(run_rows))
    assert "--stream" in run_rows["stream.kind"][2] and "--window" in run_rows["stream.window"][2]
    assert "--seed" in run_rows["seeds"][2] and "--batch-size" in run_rows["batch_size"][2]
    assert "--no-baselines" in run_rows["baselines"][2]
    for name, keys in EXECUTORS.items():
        assert set(table_rows(documented[f"[executor.{name}]"])) == set(keys)


def test_config_reference_covers_every_plugin_parameter_and_the_schema_accepts_them():
    subsections = sections(config_reference.page(), "###")
    for section, (kind, skip) in PLUGIN_SECTIONS.items():
        for name in registry.names(kind):
            key = name if re.fullmatch(r"[\w-]+", name) else f'"{name}"'
            body = subsections[f"[{section}.{key}]"]
            accepted = plugin_parameters(registry.get(kind, name), skip)
            rows = table_rows(body)
            if accepted is None:
                assert "Takes any keyword parameter" in body
                continue
            assert set(rows) == set(accepted), (section, name)
            for param, cells in rows.items():  # the documented default passes the schema
                default = cells[2].strip("`")
                if default in ("unset", "required"):
                    continue
                value = tomllib.loads(f"v = {default}")["v"]
                check_layer(Layer("docs", {section: {name: {param: value}}}))


def test_documented_defaults_are_the_plugins_own():
    subsections = sections(config_reference.page(), "###")
    rdumb = table_rows(subsections["[adapter.rdumb]"])
    assert rdumb["reset_every"][1:] == ["int", "`1000`"]
    assert rdumb["norms"][2] == '`["batch"]`'
    assert table_rows(subsections["[suite.tiny]"])["n_examples"][1:] == ["int", "`256`"]
    assert table_rows(subsections["[estimator.enigma]"])["estimate_at"][2] == "`unset`"


def test_a_newly_installed_estimator_has_its_parameters_documented(toy_dist):
    body = sections(config_reference.page(), "###")["[estimator.toy-score]"]
    rows = table_rows(body)
    assert rows["scale"][1:] == ["float", "`2.5`"] and rows["label"][1:] == ["str", '`"toy"`']
    assert "distribution `toydocs`" in body and "A toy score" in body


def test_a_run_key_without_a_meaning_stops_the_build(monkeypatch):
    from ttabench import spec

    monkeypatch.setattr(spec, "RUN_OPTIONS", (*spec.RUN_OPTIONS, spec.Option(
        ("brand_new_key",), None, spec.STRING, "config only")))
    with pytest.raises(config_reference.ReferenceError, match="brand_new_key.*MEANINGS"):
        config_reference.page()
    monkeypatch.setitem(config_reference.MEANINGS, "run.brand_new_key", "What it does.")
    assert "What it does." in table_rows(sections(config_reference.page(), "##")["[run]"])[
        "brand_new_key"][2]


def test_the_schema_refuses_what_the_reference_does_not_list():
    with pytest.raises(TTABenchError, match="unknown key 'sead'"):
        check_layer(Layer("docs", {"run": {"sead": 1}}))


# --------------------------------------------------------------------------- generated tables


def test_results_pages_show_every_results_file_and_figure():
    pages, unplaced = results_pages.collect(ROOT)
    files = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert [p.source for p in pages] == files
    owners = {f.name: p.source.name for p in pages for f in p.figures}
    assert owners["continual_low_lr.png"] == "continual.md"
    assert owners["tent-sweep.png"] == "drift_sweep.md"
    assert not unplaced
    quality = next(p for p in pages if p.source.name == "quality.md")
    assert quality.source.read_text() in results_pages.page_markdown(ROOT, quality)


def test_the_shift_table_has_every_table1_record():
    from ttabench.suites.shifts import SHIFTS

    text = snippets.expand("before\n<!-- generated: shift-datasets -->\nafter")
    rows = text.splitlines()[3:-1]
    assert len(rows) == len(SHIFTS) and all(f"`{key}`" in text for key in SHIFTS)
    with pytest.raises(snippets.SnippetError, match="no-such"):
        snippets.expand("<!-- generated: no-such -->")


def test_the_plugin_table_lists_every_plugin_the_distribution_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    names = {name for group, entries in declared.items()
             if group.split(".")[1] in registry.KINDS for name in entries}
    rows = table_rows(snippets.expand("<!-- generated: plugins ttabench-enigma -->"))
    assert set(rows) - {"name"} == names
    assert rows["rdumb"][1:] == ["adapter", "RDumb: ETA with a full reset to the pretrained state "
                                 "every ``reset_every`` steps."]
    with pytest.raises(snippets.SnippetError, match="no plugin of distribution"):
        snippets.expand("<!-- generated: plugins no-such-dist -->")


def test_rest_docstring_forms_become_fenced_blocks():
    doc = ("Lines::\n\n    a = 1\n    b = 2\n\nThen a table:\n\n"
           "==== ====\nkey  what\n==== ====\nrun  the run\n==== ====\n\n"
           ">>> 1 + 1\n2\n\nEnd.")
    assert griffe_docstrings.fence_rest(doc).splitlines() == [
        "Lines:", "", "```text", "a = 1", "b = 2", "```", "", "Then a table:", "",
        "```text", "==== ====", "key  what", "==== ====", "run  the run", "==== ====", "```",
        "", "```pycon", ">>> 1 + 1", "2", "```", "", "End."]


# --------------------------------------------------------------------------- link checks


def test_link_policy_refuses_remote_resources_and_unlisted_hosts():
    page = ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?x">'
            '<script src="https://cdn.example.org/a.js"></script>'
            '<a href="https://github.com/oripress/CCC">ok</a>'
            '<a href="https://tracker.example.com/x">no</a><a href="guide/runs.html#x">in</a>'
            '<img src="report.png">')
    found = links.problems(page)
    assert len(found) == 3
    assert "fonts.googleapis.com" in found[0] and "cdn.example.org" in found[1]
    assert "tracker.example.com" in found[2]


def test_linkcheck_finds_broken_links_and_missing_anchors(tmp_path):
    (tmp_path / "guide").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="guide/a.html#ok">1</a><a href="guide/a.html#gone">2</a>'
        '<a href="guide/missing.html">3</a><a href="#top">4</a><h1 id="top">t</h1>'
        '<a href="https://github.com/x">5</a>')
    (tmp_path / "guide" / "a.html").write_text('<h2 id="ok">ok</h2><a href="../index.html">b</a>')
    found, hosts = linkcheck.check(tmp_path)
    assert found == ["index.html: no anchor #gone in guide/a.html",
                     "index.html: broken link guide/missing.html"]
    assert hosts == {"github.com": 1}
