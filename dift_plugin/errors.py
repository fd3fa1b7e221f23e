"""The one user-facing error type, shared by the libraries (``dift_plugin``, ``attacks``) and ``harness``."""


class DiftUserError(ValueError):
    """A bad configuration or missing input that the user can fix; printed without a traceback."""
