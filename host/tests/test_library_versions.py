"""A cell records library versions from package metadata: recording them imports none of
the libraries (a worker process that never uses torchvision or timm does not load them)."""

from __future__ import annotations

import json
import subprocess
import sys

RECORD = """
import json, sys, torch
from ttabench.runner.cells import environment_record
record = environment_record(torch.device("cpu"))
print(json.dumps({"loaded": sorted(m for m in ("torchvision", "timm") if m in sys.modules),
                  "versions": record["versions"]}))
"""


def test_recording_versions_imports_no_library_and_gives_their_own_versions():
    run = subprocess.run([sys.executable, "-c", RECORD], capture_output=True, text=True,
                         timeout=300, check=True)
    recorded = json.loads(run.stdout.strip().splitlines()[-1])
    assert recorded["loaded"] == []
    # the versions the libraries themselves report, imported here (the local build tag, such
    # as +cpu, is not part of a package's metadata version)
    import numpy
    import timm
    import torch
    import torchvision

    assert recorded["versions"] == {
        "torch": torch.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "torchvision": torchvision.__version__.split("+")[0],
        "numpy": numpy.__version__.split("+")[0],
        "timm": timm.__version__.split("+")[0],
    }
