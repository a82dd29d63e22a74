"""The one exception type users see.

Every check on user input (files, settings, checkpoints) raises `RactError` with a message that
names the file, line, field or setting and says what was expected. The command line prints the
message as a single line and exits with status 2; anything else escaping is a bug.
"""


class RactError(Exception):
    """Bad input or an impossible setting, described for the user."""


class ModelFailure(RactError):
    """A model that cannot be fit on this data with these settings: a non-finite loss, a matrix
    that is not positive definite, a fit larger than its memory budget. Deterministic, so
    running the same job again fails the same way; the workflow records it for baselines (the
    comparison shows them as failed) instead of stopping the study."""
