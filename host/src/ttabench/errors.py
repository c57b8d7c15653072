"""The exception types the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations

import signal


class TTABenchError(Exception):
    """A user-facing error: bad input, missing data, an unknown or broken plugin.

    The CLI prints ``error: <message>`` on one line and exits with status 2; the
    message must say what is wrong and what to do about it.
    """


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal: Ctrl-C (SIGINT) or SIGTERM, which stops the same way.

    ``signum`` is the signal; ``detail`` says what was kept (e.g. the finished cells). The CLI
    prints ``error: interrupted by <SIGNAL>[; detail]`` and exits with 128 + the signal number.
    """

    def __init__(self, signum: int = signal.SIGINT, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum = int(signum)
        self.detail = detail

    def __str__(self) -> str:
        text = f"interrupted by {signal.Signals(self.signum).name}"
        return f"{text}; {self.detail}" if self.detail else text


def raise_interrupted(signum: int, frame: object) -> None:
    """A signal handler that stops the main thread as Ctrl-C does (``Interrupted``)."""
    raise Interrupted(signum)
