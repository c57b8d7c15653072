"""Compatibility fixes needed to import timm 1.0.9 and robustbench 1.1.1 on a current stack.

timm's import applies ``torch.jit.interface``, which this torch deprecates with a
FutureWarning printed on every run: ``import_timm`` silences exactly that warning, during the
import only.

Two problems of robustbench, both fixed here and nowhere else:

1. robustbench imports ``pkg_resources``, which setuptools removed in version 81; the project
   pins ``setuptools<81`` (a dependency in pyproject.toml), and ``import_robustbench`` says so
   clearly when the pin is not honoured.
2. robustbench imports ``autoattack`` and ``autoattack.state``, but the PyPI distribution
   ``pyautoattack`` installs that code as the module ``pyautoattack``. Both names are aliased in
   ``sys.modules`` before robustbench is imported.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

from ttabench.errors import TTABenchError


#: The one warning importing timm prints with this torch (timm's code, not the user's).
TIMM_IMPORT_WARNING = r"`torch\.jit\.interface` is deprecated"


def import_timm() -> ModuleType:
    """Import and return ``timm`` without the FutureWarning its import triggers in torch."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TIMM_IMPORT_WARNING, category=FutureWarning)
        return importlib.import_module("timm")


def alias_autoattack() -> None:
    """Make ``import autoattack`` and ``import autoattack.state`` resolve to ``pyautoattack``."""
    if "autoattack" in sys.modules and "autoattack.state" in sys.modules:
        return
    try:
        package = importlib.import_module("pyautoattack")
        state = importlib.import_module("pyautoattack.state")
    except ImportError as exc:
        raise TTABenchError(
            f"robustbench needs the 'pyautoattack' package ({exc}); "
            "install it with: pip install pyautoattack==0.2.0"
        ) from exc
    sys.modules.setdefault("autoattack", package)
    sys.modules.setdefault("autoattack.state", state)


def import_robustbench() -> ModuleType:
    """Import and return ``robustbench`` (with ``robustbench.utils`` and ``robustbench.data``
    loaded) after applying both fixes; a failure becomes a one-line TTABenchError."""
    alias_autoattack()
    import_timm()  # robustbench imports it
    try:
        with warnings.catch_warnings():  # its deprecation notice is what the pin is about
            warnings.simplefilter("ignore", UserWarning)
            import pkg_resources  # noqa: F401  (robustbench needs it; absent from setuptools>=81)
    except ImportError as exc:
        raise TTABenchError(
            "robustbench needs pkg_resources, which setuptools>=81 no longer ships; "
            "install the pinned version: pip install 'setuptools<81'"
        ) from exc
    try:
        module = importlib.import_module("robustbench")
        importlib.import_module("robustbench.utils")
        importlib.import_module("robustbench.data")
    except ImportError as exc:
        raise TTABenchError(
            f"robustbench failed to import ({exc}); install it with: pip install robustbench==1.1.1"
        ) from exc
    return module
