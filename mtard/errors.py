"""The one exception type users see.

Every problem caused by user input (a config, a file, a name) raises `MtardError`
with a message that names the problem *and* the fix. The CLI prints it as one line
and exits with status 2; `--debug` shows the traceback instead.
"""


class MtardError(Exception):
    """A user-facing error: `str(err)` is a complete, actionable sentence."""
