"""User-facing error type.

Every problem caused by a user's file, model or argument is raised as :class:`MedsaeError`
with a single-line message that names the file and the problem. The command line prints that
line and exits with code 1; the UI shows it in a message box. Anything else is a bug and gets a
traceback (with ``--debug``).
"""


class MedsaeError(Exception):
    """A data or model problem to report to the user in one line.

    Parameters
    ----------
    message
        What went wrong, without a trailing period; newlines are folded to keep it one line.
    path
        The file or folder concerned, prefixed to the message when given.
    """

    def __init__(self, message: str, path: object | None = None) -> None:
        message = " ".join(str(message).split())
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UsageError(MedsaeError):
    """A bad combination of command-line arguments (exit code 2)."""
