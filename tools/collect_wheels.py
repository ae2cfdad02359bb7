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
drift from what kd_plugins needs) plus the packages those pull in that the
OpenMMLab wheels do not declare or that pip would otherwise resolve on the
node. ``--dry-run`` prints the pip command.
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


def install_requires() -> list[str]:
    """setup.py's install_requires, read without running setup.py."""
    tree = ast.parse(open(osp.join(ROOT, 'setup.py')).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'install_requires':
            return [ast.literal_eval(e) for e in node.value.elts]
    raise RuntimeError('setup.py has no install_requires')  # pragma: no cover


def _name(req: str) -> str:
    for sep in '<>=!~[; ':
        req = req.split(sep)[0]
    return req.lower()


def requirements(node_has=NODE_HAS) -> list[str]:
    """What to download: setup.py's requirements and the transitive ones,
    without what the node has."""
    skip = {_name(n) for n in node_has}
    own = [NODE_PINS.get(_name(r), r) for r in install_requires()
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
    p.add_argument('--dry-run', action='store_true')
    args = p.parse_args(argv)
    reqs = args.only or requirements(args.node_has)
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps',
           '--only-binary=:all:', '--python-version', args.python,
           '-d', args.out]
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
