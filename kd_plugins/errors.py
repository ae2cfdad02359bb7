"""Errors kd_plugins raises for problems a user can fix.

Every message names the problem and the fix. ``tools/train.py`` and
``tools/test.py`` print them as one clean message (no traceback).
"""
from __future__ import annotations


class KDPluginsError(RuntimeError):
    """A problem with the user's run that a user can fix."""


class PreflightError(KDPluginsError):
    """A configuration problem found before training starts."""


class CheckpointError(KDPluginsError):
    """A checkpoint that is missing, truncated, corrupt or unsafe to load."""


class NonFiniteLossError(KDPluginsError):
    """A loss term became NaN or infinite during training."""


class ArgumentError(KDPluginsError):
    """A command-line argument naming a file or folder that is missing or
    unusable (config, checkpoint, statistics file, output location)."""


class MissingFileError(KDPluginsError, FileNotFoundError):
    """A file the run needs (statistics, a stage-1 checkpoint, a checkpoint
    to load) does not exist; the message says how to make it."""


class DiskFullError(KDPluginsError, OSError):
    """A save that the disk (or the quota) could not hold."""


class DataError(KDPluginsError):
    """A training sample that cannot be read (corrupt, truncated or empty
    file), under the config's ``data_errors`` policy."""


class ConfigError(KDPluginsError, ValueError):
    """Parts of a config that do not fit together (channels, classes,
    statistics files, classifiers), found while the model is built or at
    its first step."""


def check_feature_map(x, who: str, channels: int | None = None) -> None:
    """Feature-based parts need (N, C, H, W) maps of ``channels`` channels.

    A transformer's (N, L, C) tokens (or pooled (N, C) vectors) get a message
    that says which methods work with such a pair.
    """
    shape = tuple(x.shape)
    if x.dim() != 4:
        raise ConfigError(
            f'{who} needs (N, C, H, W) feature maps but got a tensor of shape '
            f'{shape} (tokens of a transformer, or pooled features).\n  Fix: '
            'record a convolutional stage (e.g. backbone.layer4), or use a '
            'logit-based method (KD, AEKT) for this teacher/student pair.')
    if channels is not None and shape[1] != channels:
        raise ConfigError(
            f'{who} expects {channels} channels but got a map of shape '
            f'{shape}.\n  Fix: set its in_channels to {shape[1]} (the '
            'recorded module\'s width).')
