"""Convert a RepDistiller / mdistiller CIFAR teacher checkpoint to kd_plugins.

    python tools/convert_repdistiller_ckpt.py ckpt_epoch_240.pth OUT.pth \
        --arch resnet32x4

Upstream checkpoints (``save/models/<arch>_vanilla/ckpt_epoch_240.pth``) hold
``{'model': state_dict, 'epoch': ..., 'accuracy': ..., 'optimizer': ...}`` with
the network's own key names. Our backbones keep those names, so the mapping
is: backbone keys -> ``backbone.<key>``, the final linear layer (``fc``,
``linear``, ``classifier`` or ``classifier.0`` by architecture) ->
``head.fc``. The result is checked against our model (strict: missing or
unexpected keys and shape mismatches are listed) and saved as an mmengine
checkpoint usable as ``model.teacher_ckpt`` or with ``tools/test.py``, marked
``meta.kd_plugins_kind='converted_teacher'`` (a file in mmpretrain's layout
given to the converter again is refused with that fix).
"""
from __future__ import annotations

import argparse
import io
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import kd_plugins  # noqa: E402,F401
from _common import need_file, out_file, run_main  # noqa: E402
from kd_plugins.errors import ArgumentError  # noqa: E402
from kd_plugins.models.backbones.cifar_zoo import CIFAR_ZOO  # noqa: E402
from kd_plugins.models.backbones.cifar_zoo import (UPSTREAM_CLASSIFIER,
                                                   cifar_classifier)
from kd_plugins.utils.checkpoint import (atomic_write, load_local_checkpoint,
                                         state_dict_diff)
from kd_plugins.utils.file_kinds import marker


def convert_state_dict(upstream: dict, arch: str) -> dict:
    """Map upstream keys to ``backbone.*`` / ``head.fc.*``."""
    head = UPSTREAM_CLASSIFIER[arch] + '.'
    out = {}
    for key, value in upstream.items():
        if key.startswith('module.'):  # saved from DataParallel
            key = key[len('module.'):]
        if key.startswith(head):
            out['head.fc.' + key[len(head):]] = value
        else:
            out['backbone.' + key] = value
    return out


def convert(src: str, dst: str, arch: str, num_classes: int = 100) -> dict:
    from mmpretrain.registry import MODELS
    if arch not in CIFAR_ZOO:
        raise ArgumentError(f'unknown --arch {arch!r}; choose from '
                            f'{", ".join(CIFAR_ZOO)}')
    need_file(src, 'upstream checkpoint', 'pass the RepDistiller / '
              'mdistiller file, e.g. save/models/resnet56_vanilla/'
              'ckpt_epoch_240.pth')
    out_file(dst, 'output checkpoint')
    # an upstream file (weights under 'model', or a bare state dict), not
    # one in mmpretrain's layout already (converted, a run, an export)
    ckpt = load_local_checkpoint(src, map_location='cpu', role='upstream')
    upstream = ckpt.get('model', ckpt.get('state_dict', ckpt))
    state = convert_state_dict(upstream, arch)
    model = MODELS.build(cifar_classifier(arch, num_classes))
    missing, unexpected, bad_shape = (sorted(keys) for keys in
                                      state_dict_diff(state,
                                                      model.state_dict()))
    if missing or unexpected or bad_shape:
        lines = [f'{src!r} does not match --arch {arch}:']
        for title, keys in (('missing', missing), ('unexpected', unexpected),
                            ('shape mismatch', bad_shape)):
            if keys:
                lines.append(f'  {title} ({len(keys)}): '
                             + ', '.join(keys[:10])
                             + (' ...' if len(keys) > 10 else ''))
        raise ArgumentError('\n'.join(lines))
    model.load_state_dict(state, strict=True)
    meta = dict(marker('converted_teacher'), source=osp.basename(src),
                arch=arch, converted_by='tools/convert_repdistiller_ckpt.py')
    for key in ('epoch', 'accuracy', 'best_acc'):
        if key in ckpt and isinstance(ckpt[key], (int, float, torch.Tensor)):
            meta[key] = float(ckpt[key])
    buf = io.BytesIO()
    torch.save(dict(meta=meta, state_dict=state), buf)
    atomic_write(buf.getvalue(), dst)
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='upstream ckpt_epoch_240.pth')
    parser.add_argument('dst', help='output .pth (mmengine layout)')
    parser.add_argument('--arch', required=True, choices=list(CIFAR_ZOO),
                        help='upstream model name')
    parser.add_argument('--num-classes', type=int, default=100)
    args = parser.parse_args(argv)
    meta = convert(args.src, args.dst, args.arch, args.num_classes)
    print(f'wrote {args.dst} ({args.arch}, {meta})')


if __name__ == '__main__':
    run_main(main)
