"""The one exception type users see.

Every check on user input (files, settings, checkpoints) raises `RactError` with a message that
names the file, line, field or setting and says what was expected. The command line prints the
message as a single line and exits with status 2; anything else escaping is a bug.
"""


class RactError(Exception):
    """Bad input or an impossible setting, described for the user."""
