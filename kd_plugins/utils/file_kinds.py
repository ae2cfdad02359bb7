"""What a file is, before kd_plugins uses it.

Every file a kd_plugins tool or model reads is recognised here first. A file
of another kind, of a newer format version, truncated or unreadable ends in
one :class:`~kd_plugins.errors.KDPluginsError` that says what the file is,
what was expected and the fix (the tool that writes the right file): never a
``KeyError`` or a torch / numpy traceback.

Kinds of file (``docs/troubleshooting.md`` lists them with their tools):

* checkpoints, recognised by :func:`checkpoint_kind` from their keys (mmengine
  and mmpretrain's model zoo write no marker): a training run's checkpoint
  (``epoch_N.pth``: distillation or plain classifier), an IE-KD stage-1
  checkpoint, a student-only export, a converted RepDistiller teacher, an
  unconverted RepDistiller / mdistiller file. What each use accepts is
  :data:`ROLES`; :func:`check_checkpoint` enforces it;
* the KD layer's statistics (``.npz``, :mod:`kd_plugins.utils.stats_file`);
* results JSON (:func:`load_json`; the Digits benchmark's ``results.json``).

Files kd_plugins writes carry a marker, :func:`marker`: ``kd_plugins_kind``
and ``format_version`` (in a checkpoint's ``meta``, in a statistics file's
``meta`` JSON, at the top of a results JSON). A file written before the
marker existed has none; it is recognised by its layout and read as version
1. A version above the one in :data:`KINDS` (a newer kd_plugins wrote it) or
a kind this version does not know is refused.

:func:`sniff` says what any file looks like from its first bytes (a torch
checkpoint, a cut-off one, an ``.npz``, JSON, a Python config, HTML...): the
"what it is" of a file that its reader cannot open.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional

MARK = 'kd_plugins_kind'
VERSION = 'format_version'


@dataclass(frozen=True)
class Kind:
    """A kind of file kd_plugins writes.

    Args:
        what: what the file is, as a message says it ("a student-only
            export").
        version: the format version this kd_plugins writes and the newest
            it reads.
        made_by: the command that writes it.
    """
    what: str
    version: int
    made_by: str


KINDS = {
    'student_export': Kind(
        'a student-only export (student weights: no teacher, no optimizer)',
        1, 'python tools/export_student.py CONFIG CHECKPOINT OUT_DIR'),
    'converted_teacher': Kind(
        'a RepDistiller/mdistiller teacher converted to mmpretrain\'s layout',
        1, 'python tools/convert_repdistiller_ckpt.py SRC OUT.pth --arch '
        'ARCH'),
    'kd_layer_stats': Kind(
        'a KD-layer statistics file', 1,
        'python tools/kd_layer_stats.py CONFIG TEACHER_CKPT OUT.npz'),
    'digits_benchmark': Kind(
        'a Digits benchmark results file', 1,
        'python tools/demo.py (it writes WORK_DIR/results.json)'),
}


def marker(kind: str) -> dict:
    """The entries that mark a file of ``kind`` written by this version."""
    return {MARK: kind, VERSION: KINDS[kind].version}


def _version() -> str:
    from ..version import __version__
    return __version__


def check_marker(info: dict, path: str, expected: str, error,
                 fix: str) -> Optional[str]:
    """The kind ``info`` (a ``meta`` dict or a JSON file's top level) is
    marked with, or None without a marker; ``error`` (a KDPluginsError
    class) when the kind is unknown, another than ``expected`` (None: any
    known kind) or newer than this kd_plugins reads."""
    if not isinstance(info, dict) or MARK not in info:
        return None
    kind, version = info.get(MARK), info.get(VERSION, 1)
    if kind not in KINDS:
        raise error(
            f'{path!r} is a kd_plugins file of kind {kind!r}, which this '
            f'kd_plugins ({_version()}) does not know: a newer kd_plugins '
            f'wrote it.\n  Fix: upgrade kd_plugins, or {fix}.')
    spec = KINDS[kind]
    if expected is not None and kind != expected:
        want = KINDS[expected]
        raise error(f'{path!r} is {spec.what} (written by {spec.made_by}), '
                    f'not {want.what}.\n  Fix: {fix}.')
    if not isinstance(version, int) or version > spec.version:
        raise error(
            f'{path!r} is {spec.what} of format version {version}, but this '
            f'kd_plugins ({_version()}) reads up to version {spec.version}: '
            'a newer kd_plugins wrote it.\n  Fix: upgrade kd_plugins, or '
            f'write the file again with this version: {spec.made_by}.')
    return kind


# ------------------------------------------------------------ any file
@dataclass(frozen=True)
class Found:
    """What :func:`sniff` found: ``kind`` (an id: 'torch', 'npz', 'json',
    ...; ``_truncated`` / ``_bad`` when cut off or malformed) and ``what``
    (the words of a message: "a JSON file (keys: ...)")."""
    kind: str
    what: str


def _first_zip_name(head: bytes) -> str:
    """The name of the first member of a zip from its local header."""
    if len(head) < 30:
        return ''
    n = int.from_bytes(head[26:28], 'little')
    return head[30:30 + n].decode('utf-8', 'replace')


def _describe_json(obj) -> str:
    if isinstance(obj, dict):
        kind = obj.get(MARK)
        if kind in KINDS:
            return (f'{KINDS[kind].what} (JSON, format version '
                    f'{obj.get(VERSION, 1)})')
        if kind is not None:
            return f'a kd_plugins JSON file of kind {kind!r}'
        keys = list(obj)[:5]
        return f'a JSON file (keys {keys}{" ..." if len(obj) > 5 else ""})'
    return f'a JSON {type(obj).__name__}'


def _describe_zip(path: str, head: bytes) -> Found:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        first = _first_zip_name(head)
        if first.endswith('.npy'):
            return Found('npz_truncated', 'a truncated or corrupt numpy '
                         '.npz archive (its zip directory is missing)')
        if first.endswith('data.pkl') or '/' in first:
            return Found('torch_truncated', 'a truncated or corrupt torch '
                         'checkpoint (its zip directory is missing)')
        return Found('zip_truncated', 'a truncated or corrupt zip archive')
    if names and all(n.endswith('.npy') for n in names):
        arrays = [n[:-4] for n in names]
        if 'meta' in arrays and any(a in arrays for a in (
                'penult_centers', 'inter_mean')):
            return Found('npz', 'a KD-layer statistics file (.npz)')
        shown = arrays[:5] + (['...'] if len(arrays) > 5 else [])
        return Found('npz', f'a numpy .npz archive (arrays {shown})')
    if any(n.endswith('/data.pkl') for n in names):
        return Found('torch', 'a torch checkpoint')
    return Found('zip', f'a zip archive ({len(names)} files, e.g. '
                 f'{names[:3]})')


def _describe_text(path: str, text: str) -> Found:
    start = text.lstrip('\ufeff \t\r\n')
    if start[:1] in ('{', '['):
        try:
            with open(path, encoding='utf-8') as f:
                obj = json.load(f)
        except (ValueError, OSError) as err:
            return Found('json_bad', 'a truncated or malformed JSON file '
                         f'({str(err).splitlines()[0]})')
        return Found('json', _describe_json(obj))
    low = start[:200].lower()
    if low.startswith(('<!doctype html', '<html')):
        return Found('html', 'an HTML page (a failed download or a login '
                     'page?)')
    if re.search(r'^(_base_|model|custom_imports|train_dataloader)\s*=',
                 text, re.M):
        return Found('config', 'a Python config file')
    return Found('text', 'a text file')


def _pickles_end(path: str, count: int = 5) -> bool:
    """Do the first ``count`` pickles of ``path`` (torch's legacy format:
    magic number, protocol, system info, the object, its storage keys; then
    raw tensor data) each end with their STOP opcode? Only the opcodes are
    read (``pickletools``): nothing is unpickled or imported. A file that
    ends cleanly after fewer pickles (a plain pickle) is complete."""
    import pickletools
    try:
        with open(path, 'rb') as f:
            for _ in range(count):
                here = f.tell()
                if not f.read(1):
                    return True  # the file ends between two pickles
                f.seek(here)
                for _ in pickletools.genops(f):
                    pass
    except (ValueError, EOFError, OSError, UnicodeDecodeError):
        return False  # "pickle exhausted before seeing STOP", a cut opcode
    return True


def sniff(path: str) -> Found:
    """What the file at ``path`` is, from its first bytes (and, for a zip
    or JSON file, its directory or its parse)."""
    path = os.fspath(path)
    if not osp.exists(path):
        return Found('missing', 'a path that does not exist')
    if osp.isdir(path):
        return Found('folder', 'a folder')
    try:
        size = osp.getsize(path)
        with open(path, 'rb') as f:
            head = f.read(4096)
    except OSError as err:
        return Found('unreadable', f'a file that cannot be read '
                     f'({err.strerror or err})')
    if size == 0:
        return Found('empty', 'an empty file (0 bytes)')
    if head.startswith(b'PK\x03\x04'):
        return _describe_zip(path, head)
    if head.startswith(b'\x93NUMPY'):
        return Found('npy', 'a numpy .npy array')
    if head[:1] == b'\x80':
        if not _pickles_end(path):
            return Found('pickle_truncated', 'a truncated or corrupt pickle '
                         "file (torch's legacy format): a pickle ends early")
        return Found('pickle', 'a pickle file (torch\'s legacy format or '
                     'a plain pickle)')
    if head.startswith(b'\x1f\x8b'):
        return Found('gzip', 'a gzip archive (unpack it first?)')
    if len(head) > 10 and head[8:10] == b'{"' and \
            int.from_bytes(head[:8], 'little') < size:
        return Found('safetensors', 'a safetensors file')
    if b'\x00' not in head:
        text = head.decode('utf-8', 'replace')
        if text.count('\ufffd') <= 3:  # a multi-byte character cut at 4 KiB
            return _describe_text(path, text)
    return Found('binary', f'binary data of no kind kd_plugins reads '
                 f'(first bytes {head[:8]!r})')


# -------------------------------------------------------------- checkpoints
STUDENT_PREFIX = 'architecture.'
CLASSIFIER_PREFIXES = ('backbone.', 'neck.', 'head.')
_STAGE1 = re.compile(r'(?:^|\.)connectors\.([^.]+)\.(encoder|decoder)\.')


def run_method(meta: dict) -> Optional[str]:
    """The model type of the run a checkpoint's ``meta['cfg']`` (the config
    text mmengine stores) describes, e.g. 'FastDistill'; None if unknown."""
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    found = re.search(r'^model = dict\((.*?)^\S', text + '\nEND',
                      re.S | re.M)
    top = re.findall(r"^    type='([\w.]+)'", found.group(1) if found
                     else '', re.M)
    return top[0].split('.')[-1] if top else None


def is_training_checkpoint(ckpt) -> bool:
    """A checkpoint mmengine can resume: ``meta`` and optimizer state."""
    return isinstance(ckpt, dict) and isinstance(ckpt.get('meta'), dict) \
        and 'optimizer' in ckpt


def _tensor_keys(sd) -> list:
    import torch
    if not isinstance(sd, dict):
        return []
    return [k[7:] if k.startswith('module.') else k
            for k, v in sd.items() if torch.is_tensor(v)]


def checkpoint_kind(ckpt) -> tuple[str, str]:
    """(kind, what it is) of a loaded checkpoint. Kinds: a marked kind of
    :data:`KINDS`, 'student_export' / 'converted_teacher' (recognised
    without a marker too), 'repdistiller' (upstream, unconverted),
    'ie_kd_stage1', 'distillation', 'classifier', 'other' (tensors in no
    layout kd_plugins knows), 'no_weights', 'not_a_dict'."""
    if not isinstance(ckpt, dict):
        return 'not_a_dict', (f'a torch file holding a '
                              f'{type(ckpt).__name__}, not a checkpoint dict')
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    kind = meta.get(MARK)
    if kind is not None:
        spec = KINDS.get(kind)
        return kind, (spec.what if spec else
                      f'a kd_plugins file of kind {kind!r}')
    if 'exported_from' in meta:  # written before the marker
        return 'student_export', KINDS['student_export'].what
    if 'converted_by' in meta:
        return 'converted_teacher', KINDS['converted_teacher'].what
    training = is_training_checkpoint(ckpt)
    if 'state_dict' not in ckpt and _tensor_keys(ckpt.get('model')):
        return 'repdistiller', ('a RepDistiller/mdistiller checkpoint (its '
                                "weights under 'model', in the upstream "
                                'layout: not converted)')
    keys = _tensor_keys(ckpt.get('state_dict', ckpt))
    if not keys:
        return 'no_weights', ('a checkpoint that holds no weights (no '
                              'tensors in its state dict)')
    parts = {}
    for k in keys:
        m = _STAGE1.search(k)
        if m:
            parts.setdefault(m.group(1), set()).add(m.group(2))
    if any(p == {'encoder', 'decoder'} for p in parts.values()):
        return 'ie_kd_stage1', ('an IE-KD stage-1 checkpoint (the teacher\'s'
                                ' auto-encoder; its student is untrained)')
    method = run_method(meta)
    if any(k.startswith(STUDENT_PREFIX) for k in keys):
        return 'distillation', ("a distillation run's checkpoint"
                                + (f' ({method})' if method else ''))
    if any(k.startswith(CLASSIFIER_PREFIXES) for k in keys):
        return 'classifier', ('a classifier checkpoint' + (
            f' of a training run ({method})' if training and method else
            ' of a training run' if training else ' (weights only)'))
    shown = ', '.join(keys[:3]) + (' ...' if len(keys) > 3 else '')
    return 'other', ('a state dict in no layout kd_plugins knows (keys '
                     f'{shown}: neither backbone.*/head.* nor '
                     'architecture.*)')


@dataclass(frozen=True)
class Role:
    """What one use of a checkpoint accepts.

    Args:
        who: the file's name in a message ('teacher checkpoint').
        expected: what the use needs, as a message says it.
        accepts: the :func:`checkpoint_kind` kinds it takes.
        fix: the fix when another kind is given.
        training: the file must also be a training checkpoint.
    """
    who: str
    expected: str
    accepts: frozenset
    fix: str
    training: bool = False


_TEACHER_FIX = ("pass the teacher's checkpoint: --cfg-options "
                'model.teacher_ckpt=PATH (model.teacher_ckpts=[...] for '
                'ATSC and several teachers)')
_STAGE1_FIX = ('run stage 1 first (e.g. python tools/train.py '
               'configs/demo/ie_kd_stage1_digits.py) and pass its '
               'work_dirs/<stage-1 config>/epoch_N.pth: --cfg-options '
               'model.distiller.connectors.t_enc.stage1_ckpt=PATH')
_TEST_EXPORT = ('test a student-only export with its own config: python '
                'tools/test.py OUT_DIR/student.py OUT_DIR/student.pth')
ROLES = {
    'teacher': Role(
        'teacher checkpoint', "a teacher's weights (a classifier "
        'checkpoint: a tools/train.py run of the teacher config, an '
        'mmpretrain model-zoo file, an export or a converted file; or a '
        'distillation checkpoint, whose student becomes the teacher)',
        frozenset({'classifier', 'distillation', 'student_export',
                   'converted_teacher', 'other'}), _TEACHER_FIX),
    'resume': Role(
        '--resume checkpoint', 'a training checkpoint of this run (the '
        'epoch_N.pth / iter_N.pth tools/train.py writes, with the optimizer '
        'and loop state)',
        frozenset({'classifier', 'distillation', 'ie_kd_stage1', 'other',
                   'no_weights'}),
        '--resume alone resumes from the newest checkpoint in --work-dir; '
        'to start a new run from these weights: --cfg-options '
        'load_from=PATH', training=True),
    'export': Role(
        'checkpoint to export', "a training run's checkpoint of this config "
        '(work_dirs/<config>/epoch_N.pth)',
        frozenset({'distillation', 'classifier', 'converted_teacher',
                   'other'}),
        'pass a checkpoint tools/train.py wrote for this config'),
    'stage1': Role(
        'IE-KD stage-1 checkpoint', 'an IE-KD stage-1 checkpoint (the '
        'teacher auto-encoder an ie_kd_stage1 config trains)',
        frozenset({'ie_kd_stage1'}), _STAGE1_FIX),
    'upstream': Role(
        'upstream checkpoint', 'a RepDistiller/mdistiller checkpoint '
        "(save/models/<arch>_vanilla/ckpt_epoch_240.pth: weights under "
        "'model')", frozenset({'repdistiller', 'other'}),
        'pass the upstream file (ckpt_epoch_240.pth of RepDistiller or '
        'mdistiller)'),
    'test_distiller': Role(
        'checkpoint', "a distillation run's checkpoint of this config "
        '(student weights architecture.*)', frozenset({'distillation'}),
        _TEST_EXPORT + '; or pass the checkpoint of this config\'s run '
        '(work_dirs/<config>/epoch_N.pth)'),
    'test_classifier': Role(
        'checkpoint', 'the weights of this classifier config (backbone.*, '
        'head.*: a training run of it, an export or a model-zoo file)',
        frozenset({'classifier', 'student_export', 'converted_teacher',
                   'other'}),
        'test a distillation checkpoint with the config it was trained '
        'with, or export its student first (python tools/export_student.py '
        'CONFIG CHECKPOINT OUT_DIR) and test OUT_DIR/student.py '
        'OUT_DIR/student.pth'),
}
# fixes for one (use, kind of file given) that say more than the use's own
_CONVERTED = ('it needs no conversion: use it as it is (e.g. '
              '--cfg-options model.teacher_ckpt=PATH)')
FIXES = {
    ('teacher', 'repdistiller'): 'convert it first: python tools/'
    'convert_repdistiller_ckpt.py SRC OUT.pth --arch ARCH, then pass '
    'OUT.pth as model.teacher_ckpt',
    ('teacher', 'ie_kd_stage1'): _TEACHER_FIX + ' (stage 1 of IE-KD trains '
    "only the teacher's auto-encoder: its file is stage 2's stage1_ckpt)",
    ('resume', 'student_export'): 'resume from the training checkpoint it '
    'was exported from (work_dirs/<config>/epoch_N.pth), or start a new run '
    'from these weights: --cfg-options load_from=PATH',
    ('export', 'student_export'): 'it is exported already: ' + _TEST_EXPORT,
    ('export', 'ie_kd_stage1'): 'export the IE-KD stage-2 run (its config '
    'trains the student), e.g. work_dirs/ie_kd_digits/epoch_N.pth',
    ('export', 'repdistiller'): 'convert it first (python tools/'
    'convert_repdistiller_ckpt.py SRC OUT.pth --arch ARCH): OUT.pth is a '
    'plain classifier already',
    ('test_distiller', 'ie_kd_stage1'): 'test the stage-2 run, whose config '
    'trains the student',
    ('test_distiller', 'classifier'): 'test it with the classifier config '
    'it was trained with (e.g. configs/demo/teacher_digits.py for the Digits '
    "teacher), or pass the checkpoint of this config's run",
    ('test_distiller', 'repdistiller'): 'convert it first (python tools/'
    'convert_repdistiller_ckpt.py SRC OUT.pth --arch ARCH) and test OUT.pth '
    'with the classifier config of that architecture',
    ('test_classifier', 'repdistiller'): 'convert it first: python tools/'
    'convert_repdistiller_ckpt.py SRC OUT.pth --arch ARCH',
    ('test_classifier', 'ie_kd_stage1'): 'test the IE-KD stage-2 run with '
    'its own config (it trains the student)',
    ('upstream', 'classifier'): _CONVERTED,
    ('upstream', 'converted_teacher'): _CONVERTED,
    ('upstream', 'student_export'): _CONVERTED,
    ('upstream', 'distillation'): 'a distillation run\'s student becomes a '
    'teacher as it is: --cfg-options model.teacher_ckpt=PATH',
}
NO_ROLE = Role('checkpoint', 'a torch checkpoint (.pth)', frozenset(),
               'pass a checkpoint written by torch.save (tools/train.py '
               'writes work_dirs/<config>/epoch_N.pth)')


def role_of(role: Optional[str]) -> Role:
    return ROLES[role] if role else NO_ROLE


def check_checkpoint(ckpt, path: str, role: Optional[str] = None) -> str:
    """The kind of the loaded checkpoint ``ckpt`` (read from ``path``);
    :class:`~kd_plugins.errors.CheckpointError` when it is a kd_plugins
    file of a newer version or an unknown kind, or not what ``role``
    (a key of :data:`ROLES`; None: any) accepts."""
    from ..errors import CheckpointError
    r = role_of(role)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    check_marker(meta, path, None, CheckpointError, r.fix)
    kind, what = checkpoint_kind(ckpt)
    if role is None:
        return kind
    if kind in r.accepts and (not r.training or is_training_checkpoint(
            ckpt)):
        return kind
    if kind in r.accepts:  # weights without optimizer and loop state
        what += ', without optimizer and loop state'
    raise CheckpointError(f'{r.who} {path!r} is {what}; expected '
                          f'{r.expected}.\n  Fix: '
                          f'{FIXES.get((role, kind), r.fix)}.')


# --------------------------------------------------------------- JSON
def load_json(path: str, kind: str, who: str, fix: str, error,
              legacy: Optional[Callable[[dict], bool]] = None) -> dict:
    """The JSON object in ``path``, a file of ``kind`` (:data:`KINDS`).

    A file without the marker is accepted when ``legacy(obj)`` says it has
    the kind's layout (a file from before the marker). Everything else --
    missing, not JSON, cut off, another kind, a newer version -- raises
    ``error`` naming what the file is, ``who`` expected it and ``fix``."""
    spec = KINDS[kind]
    found = sniff(path)
    if found.kind != 'json':
        raise error(f'{who} {path!r} is {found.what}, not {spec.what} '
                    f'(JSON).\n  Fix: {fix}.')
    with open(path, encoding='utf-8') as f:
        obj = json.load(f)
    if not isinstance(obj, dict):
        raise error(f'{who} {path!r} is {_describe_json(obj)}, not '
                    f'{spec.what}.\n  Fix: {fix}.')
    marked = check_marker(obj, path, kind, error, fix)
    if marked is None and not (legacy and legacy(obj)):
        raise error(f'{who} {path!r} is {_describe_json(obj)}, not '
                    f'{spec.what} (written by {spec.made_by}).\n  Fix: '
                    f'{fix}.')
    return obj


__all__ = ['MARK', 'VERSION', 'KINDS', 'Kind', 'marker', 'check_marker',
           'sniff', 'Found', 'checkpoint_kind', 'check_checkpoint', 'ROLES',
           'Role', 'role_of', 'run_method', 'is_training_checkpoint',
           'load_json']
