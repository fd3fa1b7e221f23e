"""User-facing errors: raised early with a message that says what to do."""


class DiftUserError(ValueError):
    """A bad configuration or missing input that the user can fix; printed without a traceback."""


class DataNotFoundError(DiftUserError, FileNotFoundError):
    """A dataset is missing or malformed at the configured location."""
