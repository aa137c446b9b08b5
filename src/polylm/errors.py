"""The one exception type for mistakes a user can fix (bad file, bad key, bad value).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class PolyLMError(Exception):
    """A user-facing error: the message names the file, key or value at fault."""
