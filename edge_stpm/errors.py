"""The one exception type that the command line turns into a single clear line."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad value, missing file); printed as one line, exit 2."""
