"""Build-time generators of the documentation site (``mkdocs.yml``, ``docs/``).

The reference pages are written from the code on every build, so they cannot drift from it:

- ``cli_reference``: every ``ttabench`` command (built-in or registered by an entry point of
  group ``ttabench.commands``) with its usage, help text and options, read from click;
- ``config_reference``: every ``plugins.toml`` section and ``[run]`` key from
  ``ttabench.config_schema``, and every registered plugin's parameters from its signature;
- ``results_pages``: one page per ``benchmarks/results/*.md`` with the figures beside it;
- ``links``: the external-link policy of the built site (no remote resource, links only to
  allowed hosts);
- ``hooks``: the MkDocs hooks that add the generated pages to the build.

Nothing here is imported by either package; the tests load it from the repository root.
"""
