"""Both packages import from a source tree that is not installed (the repository on
``PYTHONPATH``, as on a bare GPU machine): no distribution metadata is found there, and the
version says so instead of failing the import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Python started on the source tree, with importlib.metadata finding no ttabench distribution
# (the editable installs of this environment hidden).
NOT_INSTALLED = """
import importlib.metadata as metadata
real = metadata.version
def version(name):
    if name.startswith("ttabench"):
        raise metadata.PackageNotFoundError(name)
    return real(name)
metadata.version = version
import ttabench, ttabench_enigma
print(ttabench.__version__, ttabench_enigma.__version__)
"""


def test_both_packages_import_without_their_distribution_metadata():
    env = {"PYTHONPATH": f"{ROOT / 'host' / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", NOT_INSTALLED], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0+not-installed", "0+not-installed"]
