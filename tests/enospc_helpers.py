"""Test-only: simulate a full disk for the saves of ``epoch_2.pth`` (and
its student copy). Imported by a config of tests/test_bad_inputs.py through
custom_imports; it wraps the one writer of kd_plugins.utils.checkpoint."""
import errno
import os

import kd_plugins.utils.checkpoint as ckpt_io


class _FullDisk:
    """A file object whose writes fail like a full disk."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[:len(data) // 2])  # part of it, then the disk ends
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)


class _Os:
    """``os`` as kd_plugins.utils.checkpoint sees it, but fdopen of a
    temporary file for epoch_2 gives a full disk."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdopen(fd, *args, **kwargs):
        f = os.fdopen(fd, *args, **kwargs)
        path = os.readlink(f'/proc/self/fd/{fd}')
        return _FullDisk(f) if 'epoch_2.pth' in path else f


ckpt_io.os = _Os()
