"""Export the student of a distillation run as a plain mmpretrain model.

    python tools/export_student.py CONFIG CHECKPOINT OUT_DIR [--onnx] \
        [--cfg-options K=V ...]

Writes OUT_DIR/student.py (an mmpretrain config with the test pipeline) and
OUT_DIR/student.pth (student weights only: no teacher, no training-only
parts). Then e.g.  python tools/test.py OUT_DIR/student.py OUT_DIR/student.pth
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import kd_plugins  # noqa: E402,F401
from _common import (add_cfg_options, load_config_with_options,  # noqa: E402
                     need_file, out_dir, run_main)
from kd_plugins.export import (check_exportable, export_onnx,  # noqa: E402
                               export_student, training_size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir')
    parser.add_argument('--onnx', action='store_true',
                        help='also write OUT_DIR/student.onnx (needs the '
                        'deploy extra) and compare it with PyTorch in '
                        'onnxruntime')
    parser.add_argument('--onnx-size', type=int, default=None,
                        help='input side of the ONNX graph (default: the '
                        'training size)')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    need_file(args.config, 'config', 'pass the config the run was trained '
              'with (e.g. configs/demo/kd_digits.py)')
    cfg = load_config_with_options(args.config, args.cfg_options)
    need_file(args.checkpoint, 'checkpoint', 'pass a checkpoint of the run '
              '(e.g. work_dirs/<config>/epoch_N.pth)')
    check_exportable(cfg.model)
    out_dir(args.out_dir, 'OUT_DIR')
    cfg_path, pth_path = export_student(cfg, args.checkpoint, args.out_dir)
    print(f'exported student: {cfg_path} {pth_path}')
    if args.onnx:
        onnx_path = osp.join(args.out_dir, 'student.onnx')
        size = args.onnx_size or training_size(cfg)  # the run's config
        diff = export_onnx(cfg_path, pth_path, onnx_path, size)
        check = ('' if diff is None else
                 f' (onnxruntime vs PyTorch: max |diff| {diff:.2e})')
        print(f'exported ONNX: {onnx_path}{check}')


if __name__ == '__main__':
    run_main(main)
