"""Errors meant for users: one clear line naming what was seen and what was expected.

The command-line tools catch :class:`SedError` and print ``error: <message>`` without a
traceback; anything else is a bug and keeps its traceback.
"""


class SedError(Exception):
    """A user error: bad data folder, bad file, bad argument."""


class CorpusError(SedError, ValueError):
    """A data folder or manifest that does not match the corpus layout."""


class AudioError(SedError):
    """An audio file that is missing, unreadable, empty or too short."""


class DataWarning(UserWarning):
    """A file left out (missing, unreadable, empty, too short) or a cache file recomputed."""
