"""Errors kd_plugins raises for problems a user can fix.

Every message names the problem and the fix. ``tools/train.py`` and
``tools/test.py`` print them as one clean message (no traceback).
"""


class KDPluginsError(RuntimeError):
    """A problem with the user's run that a user can fix."""


class PreflightError(KDPluginsError):
    """A configuration problem found before training starts."""


class CheckpointError(KDPluginsError):
    """A checkpoint that is missing, truncated, corrupt or unsafe to load."""


class NonFiniteLossError(KDPluginsError):
    """A loss term became NaN or infinite during training."""


class ConfigError(KDPluginsError, ValueError):
    """Parts of a config that do not fit together (channels, classes,
    statistics files, classifiers), found while the model is built or at
    its first step."""
