"""Errors meant for the user: one paragraph that names the key or file and the fix."""


class UserError(Exception):
    """A problem the user can fix (missing data, bad override...). Printed without a traceback."""
