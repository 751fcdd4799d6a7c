"""The one error type a user sees: bad input, settings or artifacts, as one line (file, record, reason)."""


class StageError(Exception):
    """Bad input or settings: the message is the one line the user sees (file, record, reason)."""
