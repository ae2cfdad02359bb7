"""Checkpoint I/O shared by the hooks, the export, the connectors and the
tools: atomic writes, and ``weights_only=True`` loads that check the file's
kind (:mod:`kd_plugins.utils.file_kinds`) and whose errors name the file,
what it is and the fix. ``kd_plugins.compat`` installs both into mmengine (its
patches 6 and 7); the functions live here so that nothing imports compat for
them.
"""
from __future__ import annotations

import errno
import os

import torch


def atomic_write(data, filepath: str, mode: str = 'wb',
                 encoding: str | None = None) -> None:
    """Write ``data`` to ``filepath`` so that readers see old or new, never
    a partial file: temporary file in the same directory, fsync, rename."""
    import tempfile
    filepath = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder,
                               prefix=f'.{os.path.basename(filepath)}.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise _disk_full(filepath, folder, len(data), err) from err
        raise


# no space left / quota exceeded
DISK_FULL = {errno.ENOSPC, getattr(errno, 'EDQUOT', errno.ENOSPC)}


def _disk_full(filepath: str, folder: str, needed: int, err: OSError):
    """The one-line error of a save that the disk could not hold."""
    import shutil

    from ..errors import DiskFullError
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # pragma: no cover
        free = None
    left = f', {free / 2**20:.1f} MiB free' if free is not None else ''
    return DiskFullError(
        f'could not write {filepath}: {err.strerror} ({needed / 2**20:.1f} '
        f'MiB needed{left}). The run stopped; the previous checkpoints in '
        f'{folder} are intact (the partial file was removed).\n  Fix: free '
        'space there (e.g. default_hooks.checkpoint.max_keep_ckpts=2) or '
        'use --work-dir on a larger disk, then --resume.')


def _plain(text: str) -> str:
    """``text`` without ANSI escape sequences (torch bolds some words)."""
    import re
    return re.sub(r'\x1b\[[0-9;]*m', '', text)


def _checkpoint_error(filename: str, err: BaseException,
                      role: str | None = None):
    """A CheckpointError naming ``filename``, what it is (from its bytes:
    :func:`~kd_plugins.utils.file_kinds.sniff`) and the fix for ``role``
    (a use of :data:`~kd_plugins.utils.file_kinds.ROLES`: 'teacher',
    'resume', 'stage1'...; None: not known)."""
    import pickle
    import re

    from ..errors import CheckpointError
    from .file_kinds import role_of, sniff
    found = sniff(filename)
    use = role_of(role)
    if found.kind not in ('torch', 'torch_truncated', 'zip_truncated',
                          'pickle', 'pickle_truncated', 'binary', 'empty',
                          'unreadable'):
        # another kind of file (JSON, .npz, a config...): say which
        return CheckpointError(
            f'{use.who} {filename!r} is not a torch checkpoint: it is '
            f'{found.what}; expected {use.expected}.\n  Fix: {use.fix}.')
    text = _plain(str(err)).strip()
    first = text.splitlines()[0] if text else ''
    if isinstance(err, pickle.UnpicklingError) and found.kind in (
            'torch', 'pickle') and ('weights_only' in text
                                    or 'kd_plugins refused' in text):
        ref = re.search(r'Unsupported global: GLOBAL ([\w.]+)', text)
        detail = re.search(r'WeightsUnpickler error:\s*(.+?)(?:\n|$)',
                           text.replace('error: \n\n', 'error: '))
        what = (f'a pickled reference to {ref.group(1)}' if ref else
                f'pickled data the safe loader refuses '
                f'({detail.group(1).strip().rstrip(".")})' if detail else
                'pickled objects')
        return CheckpointError(
            f'refused to load checkpoint {filename!r}: it contains {what}, '
            'outside kd_plugins\' allow-list. Checkpoints are loaded with '
            'weights_only=True, so a file carrying arbitrary Python objects '
            'is never executed.\n  Fix: use a checkpoint written by '
            'mmengine/mmpretrain/kd_plugins; if you trust this file, re-save '
            'only its tensors: torch.save({"state_dict": '
            'model.state_dict()}, PATH).')
    cause = (found.what if found.kind in ('torch_truncated', 'empty',
                                          'pickle_truncated', 'binary')
             else f'{type(err).__name__}: {first}')
    head = (f'{use.who} {filename!r} is unreadable - truncated or corrupt '
            f'({cause}).\n  Fix: ')
    teacher_fix = ('re-download or re-train the teacher and pass it with '
                   '--cfg-options model.teacher_ckpt=PATH (model.teacher_ckpts'
                   '=[...] for ATSC and several teachers).')
    folder = os.path.dirname(os.path.abspath(filename))
    other = _newest_other(folder, filename) or 'work_dirs/RUN/epoch_N.pth'
    resume_fix = ('delete it and resume from an earlier checkpoint, e.g. '
                  f'--resume {other}')
    if role == 'teacher':
        return CheckpointError(head + 'this is a teacher checkpoint: '
                               + teacher_fix)
    if role == 'resume':
        return CheckpointError(head + resume_fix + '.')
    if role is not None:  # the file of one use: write it again
        return CheckpointError(head + f'write it again; {use.fix}.')
    return CheckpointError(head + resume_fix + '; if it is a teacher, '
                           + teacher_fix)


def _newest_other(folder: str, filename: str):
    import glob
    others = [f for f in glob.glob(os.path.join(folder, '*.pth'))
              if os.path.abspath(f) != os.path.abspath(filename)]
    return max(others, key=os.path.getmtime) if others else None


def load_local_checkpoint(filename: str, map_location=None,
                          role: str | None = None):
    """``torch.load(filename, weights_only=True)``, then the file's kind
    checked (:func:`kd_plugins.utils.file_kinds.check_checkpoint`): a
    kd_plugins file of a newer format version is refused, and with ``role``
    (a use of :data:`~kd_plugins.utils.file_kinds.ROLES`: 'teacher',
    'resume', 'export', 'stage1', 'upstream', 'test_distiller',
    'test_classifier') a checkpoint of another kind is. Errors name the
    file, what it is and the fix (used by mmengine's local loader, role
    None, and by kd_plugins' own tools and models)."""
    from ..errors import CheckpointError, MissingFileError
    from .file_kinds import check_checkpoint, role_of
    filename = os.path.expanduser(os.fspath(filename))
    use = role_of(role)
    if os.path.isdir(filename):
        raise CheckpointError(f'{use.who} {filename!r} is a folder, not a '
                              f'checkpoint file.\n  Fix: {use.fix}.')
    if not os.path.isfile(filename):
        raise MissingFileError(f'checkpoint {filename!r} does not exist.\n'
                               '  Fix: pass the path of an existing '
                               'checkpoint.')
    if not os.access(filename, os.R_OK):
        raise CheckpointError(f'{use.who} {filename!r} is not readable '
                              '(permission denied).\n  Fix: make it '
                              'readable (chmod u+r), or pass a copy you can '
                              'read.')
    try:
        ckpt = torch.load(filename, map_location=map_location,
                          weights_only=True)
    except (FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # torch raises many types for a bad file
        raise _checkpoint_error(filename, err, role) from err
    check_checkpoint(ckpt, filename, role)
    return ckpt


def state_dict_diff(have: dict, want: dict) -> tuple[list, list, list]:
    """How the tensors ``have`` (a checkpoint's) differ from ``want`` (a
    model's state dict): (missing keys, unexpected keys, keys whose shapes
    differ), each in ``want``/``have`` order."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [k for k in want if k in have
              and tuple(have[k].shape) != tuple(want[k].shape)]
    return missing, unexpected, shapes
