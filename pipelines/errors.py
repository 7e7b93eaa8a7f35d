"""The one exception type for errors a user can cause (paths, files, rows, names, fractions)."""


class RareganError(Exception):
    """A user error: the message names the culprit and says what to do; the CLI exits 2."""
