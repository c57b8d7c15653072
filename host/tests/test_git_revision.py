"""A cell records the revision of the code its process runs, even when the checkout moves on
during the run."""

from __future__ import annotations

import subprocess

import pytest

from ttabench.runner import cells


def test_the_revision_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    cells.git_revision.cache_clear()
    first = cells.git_revision()
    calls: list[object] = []

    def moved_on(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout="f" * 40 + "\n", stderr="")

    monkeypatch.setattr(subprocess, "run", moved_on)  # the tree now says another revision
    assert cells.git_revision() == first
    assert cells.environment_record(cells.torch.device("cpu"))["git_revision"] == first
    assert not [c for c in calls if "git" in str(c)]
    cells.git_revision.cache_clear()
    assert cells.git_revision() == "f" * 40 + "-dirty"  # uncached, the moved tree is read
