"""The harness's own user-facing error (the base type, ``DiftUserError``, lives in ``dift_plugin.errors``)."""

from dift_plugin.errors import DiftUserError


class DataNotFoundError(DiftUserError, FileNotFoundError):
    """A dataset is missing or malformed at the configured location."""
