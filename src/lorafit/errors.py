"""The one error type users see: a one-line message, exit status 2, no traceback."""


class LorafitError(Exception):
    """A problem with the user's input (recipe, data, run directory), not a bug in lorafit."""

    exit_code = 2
