"""Decode every sample of a config's data set and list the bad files.

    python tools/check_data.py CONFIG [--split train|val|test] [--workers N]
        [--cfg-options K=V ...]

Runs the split's data set with its own pipeline (as training reads it), in
parallel, with progress, and lists each sample that cannot be read or
decoded (corrupt, truncated, empty or mislabelled files) with the error.
Exit code 1 when any is bad: the check to run before a multi-day job.
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
                     run_main)
from kd_plugins.datasets.check import check_dataset  # noqa: E402
from kd_plugins.engine.preflight import check_data  # noqa: E402
from kd_plugins.errors import ConfigError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--split', default='train',
                   choices=['train', 'val', 'test'])
    p.add_argument('--workers', type=int, default=2,
                   help='decoding processes (default 2)')
    add_cfg_options(p)
    args = p.parse_args(argv)
    cfg = load_config_with_options(args.config, args.cfg_options)
    key = f'{args.split}_dataloader'
    if not cfg.get(key):
        raise ConfigError(f'the config has no {key}.\n  Fix: choose another '
                          '--split.')
    check_data(cfg, (key, ))  # a missing data root: one line, first
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    dataset = DATASETS.build(cfg[key]['dataset'])
    print(f'[check_data] {args.split}: {len(dataset)} samples, '
          f'{args.workers} workers', flush=True)
    bad = check_dataset(dataset, args.workers,
                        log=lambda m: print(m, flush=True))
    for i, path, err in bad:
        print(f'BAD {path} (sample {i}): {err}', flush=True)
    if bad:
        print(f'[check_data] {len(bad)} of {len(dataset)} samples cannot be '
              'read. Fix: replace or remove these files before training.',
              flush=True)
        return 1
    print('[check_data] every sample decodes', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
