"""``python -m ttabench``: the same as the ``ttabench`` command."""

from ttabench.cli import main

main()
