"""The base of every error a user can fix from its message (bad key, file, row, value): the command
line prints the one line and exits 1, with no traceback. Imports nothing, so the CLI can catch it
without loading torch."""


class UserError(Exception):
    """An error whose message names what is wrong and how to fix it."""
