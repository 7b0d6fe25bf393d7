"""The one exception every layer raises for a mistake the user can fix."""


class UserError(Exception):
    """A mistake the user can fix (bad file, key or value): reported as one line, exit code 2."""
