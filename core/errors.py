"""The one error type a user sees: bad input, settings or artifacts, as one line (file, record, reason);
and warnings, one line each in the same style (`warning: <where>: <what>`)."""

import sys


class StageError(Exception):
    """Bad input or settings: the message is the one line the user sees (file, record, reason)."""


def warn(where: str, message: str) -> None:
    """`warning: <where>: <message>` on stderr, where the stage's `error:` lines go."""
    print(f"warning: {where}: {message}", file=sys.stderr, flush=True)
