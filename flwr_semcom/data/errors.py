"""Error types of the data layer.

Both carry a one-line message naming the file or setting, what was expected and the valid
range, so that a user can fix the input without reading the code.
"""

from __future__ import annotations


class DataNotFoundError(FileNotFoundError):
    """A data file or folder that a setting points to does not exist."""


class DataFormatError(ValueError):
    """A data file exists but does not have the expected layout, field, shape or magic."""
