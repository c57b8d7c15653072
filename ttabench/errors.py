"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class TTABenchError(Exception):
    """A user-facing error: bad input, missing data, an unknown or broken plugin.

    The CLI prints ``error: <message>`` on one line and exits with status 2; the
    message must say what is wrong and what to do about it.
    """
