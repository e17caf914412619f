"""User-facing errors: each carries a one-line message that names the file and the problem.

The CLI prints ``pivad: error: <message>`` and exits with code 2 for any :class:`PivadError`,
without a traceback. Library callers catch them like any exception.
"""


class PivadError(Exception):
    """A user mistake or bad input; the message is one line, shown as is."""


class ConfigError(PivadError):
    """An unknown config key, a wrong type, or an unreadable config file."""


class DataError(PivadError):
    """A missing, unreadable or malformed data file (features, lists, annotations, modalities)."""


class VideoError(PivadError):
    """A video that cannot be opened or decoded."""


class CheckpointError(PivadError):
    """A checkpoint that cannot be read or does not fit the model."""


class DiskError(PivadError):
    """A write refused by a full, over-quota or read-only disk: the whole run stops, not one input."""
