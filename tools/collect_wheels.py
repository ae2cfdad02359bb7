"""Collect the wheels an offline GPU node needs to run kd_plugins.

    python tools/collect_wheels.py [--out .device_wheels] [--python 3.12] \
        [--platform manylinux2014_x86_64 ...] [--dry-run]

Run it where there is a package index; take OUT along to the node (an
air-gapped cluster, or a GPU machine with torch + CUDA preinstalled and no
network). There, ``make gpu-check`` installs them into /tmp/site (or run
``python -m pip install --no-index --no-deps --target DIR OUT/*.whl`` and put
DIR on PYTHONPATH). torch and torchvision are not collected: the node's own
CUDA build is used, and so are its numpy, scipy and matplotlib (``--node-has``
changes that). The list is setup.py's install_requires (so it cannot
drift from what kd_plugins needs), mmcv-lite (setup.py's ``lite`` extra: not
collected with ``--node-has mmcv``, for a node whose own mmcv has CUDA ops)
plus the packages those pull in that the OpenMMLab wheels do not declare or
that pip would otherwise resolve on the node. ``--find-links DIR`` takes the
wheels from DIR instead of the package index. ``--dry-run`` prints the pip
command.
"""
from __future__ import annotations

import argparse
import ast
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# preinstalled on the node (a CUDA torch and the scientific stack it ships
# with); --node-has changes the list
NODE_HAS = ('torch', 'torchvision', 'numpy', 'scipy', 'matplotlib')
# versions for the node's Python 3.12 and its preinstalled numpy/scipy
NODE_PINS = {'scikit-learn': 'scikit-learn<1.8'}
# what the OpenMMLab packages import at run time, beyond setup.py's list
TRANSITIVE = ['addict', 'yapf', 'termcolor', 'mat4py', 'modelindex',
              'model-index', 'ordered-set', 'platformdirs',
              'importlib-metadata<9', 'threadpoolctl', 'rich',
              'markdown-it-py', 'mdurl', 'pygments']


def _setup_keyword(name: str):
    """The value of setup.py's ``setup(name=...)``, read without running
    setup.py (it must be a literal)."""
    tree = ast.parse(open(osp.join(ROOT, 'setup.py')).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise RuntimeError(f'setup.py has no {name}')  # pragma: no cover


def install_requires() -> list[str]:
    """setup.py's install_requires."""
    return _setup_keyword('install_requires')


def extras_require() -> dict[str, list[str]]:
    """setup.py's extras_require."""
    return _setup_keyword('extras_require')


def _name(req: str) -> str:
    for sep in '<>=!~[; ':
        req = req.split(sep)[0]
    return req.lower()


def requirements(node_has=NODE_HAS) -> list[str]:
    """What to download: setup.py's requirements, mmcv-lite unless the
    node has an mmcv, and the transitive ones, without what the node has."""
    skip = {_name(n) for n in node_has}
    if 'mmcv' in skip:  # the node's mmcv (with CUDA ops): no mmcv-lite
        skip.add('mmcv-lite')
    own = [NODE_PINS.get(_name(r), r)
           for r in install_requires() + extras_require()['lite']
           if _name(r) not in skip]
    have = {_name(r) for r in own}
    return own + [r for r in TRANSITIVE
                  if _name(r) not in have and _name(r) not in skip]


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='.device_wheels')
    p.add_argument('--python', default='3.12',
                   help='the node\'s Python version (default 3.12)')
    p.add_argument('--platform', nargs='+',
                   default=['manylinux2014_x86_64', 'manylinux_2_28_x86_64',
                            'any'])
    p.add_argument('--node-has', nargs='*', default=list(NODE_HAS),
                   help='packages the node already has (not collected)')
    p.add_argument('--only', nargs='+', default=None,
                   help='collect only these requirements (e.g. to refresh '
                   'one package)')
    p.add_argument('--find-links', default=None, metavar='DIR',
                   help='take the wheels from DIR (pip --no-index '
                   '--find-links) instead of the package index')
    p.add_argument('--dry-run', action='store_true')
    args = p.parse_args(argv)
    reqs = args.only or requirements(args.node_has)
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps',
           '--only-binary=:all:', '--python-version', args.python,
           '-d', args.out]
    if args.find_links:
        cmd += ['--no-index', '--find-links', args.find_links]
    for plat in args.platform:
        cmd += ['--platform', plat]
    cmd += reqs
    print('[collect_wheels] ' + ' '.join(cmd), flush=True)
    if args.dry_run:
        return cmd
    os.makedirs(args.out, exist_ok=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(f for f in os.listdir(args.out) if f.endswith('.whl'))
    print(f'[collect_wheels] {len(wheels)} wheels in {args.out}; on the node:'
          f' make gpu-check (installs them into /tmp/site)', flush=True)
    return cmd


if __name__ == '__main__':
    main()
