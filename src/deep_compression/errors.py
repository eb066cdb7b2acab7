"""One error hierarchy for the whole project.

Every failure a user can cause (a bad file, a bad config, a bad argument) surfaces as a
subclass of :class:`DeepCompressionError` with a message that says what was wrong and
where. The CLI prints that message on one line and exits non-zero; it never shows a
traceback for these. Internal invariants use ``assert``.

This module imports nothing heavy, so the torch-free decoder can use it.
"""

from __future__ import annotations

__all__ = [
    "DeepCompressionError",
    "ConfigError",
    "DataError",
    "FormatError",
    "DistributedError",
]


class DeepCompressionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(DeepCompressionError, ValueError):
    """A configuration, recipe or argument value is invalid (names the field and value)."""


class DataError(DeepCompressionError):
    """A dataset file is missing, truncated or corrupt (names the file)."""


class FormatError(DeepCompressionError):
    """A ``.dcz`` or checkpoint file is malformed or untrusted input failed validation."""


class DistributedError(DeepCompressionError):
    """A multi-process run went wrong: a rank died or timed out, or the ranks' models
    differ after a phase (names the phase, and the first differing tensor)."""
