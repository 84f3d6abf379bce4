"""The one exception type users see.

Every problem caused by user input (a config, a file, a name) raises `MtardError`
with a message that names the problem *and* the fix. The CLI prints it as one line
and exits with status 2; `--debug` shows the traceback instead.
"""


class MtardError(Exception):
    """A user-facing error: `str(err)` is a complete, actionable sentence."""


class Interrupted(Exception):
    """A command stopped by a signal (Ctrl-C, SIGTERM) after keeping what it had computed.

    `str(err)` says how to continue; the CLI exits with 128 + `signum` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
