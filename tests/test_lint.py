"""Code rules: flake8 and isort with mmpretrain's settings (setup.cfg), and
the package's import layering (tools -> engine -> algorithms -> losses,
connectors, models -> utils: imports only go down)."""
import ast
import glob
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PATHS = ['kd_plugins', 'tools', 'tests', 'setup.py', 'configs']


@pytest.mark.parametrize('tool,args', [
    ('flake8', PATHS),
    ('isort', ['--check-only', '--diff'] + PATHS[:-1]),
])
def test_lint_is_clean(tool, args):
    proc = subprocess.run([sys.executable, '-m', tool, *args], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, (
        f'{tool} found violations (fix them, or run `{tool}` on the files):'
        f'\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}')


# a module may import its own layer and the layers below it
LAYER = {
    'errors': 0, 'version': 0, 'utils': 0,
    'compat': 1,
    'losses': 2, 'connectors': 2, 'models': 2, 'datasets': 2,
    'algorithms': 3, 'export': 3, 'kd_layer_stats': 3,
    'engine': 4,
    'digits_benchmark': 4,
}


def _package_imports(path):
    """Top-level kd_plugins subpackages/modules ``path`` imports."""
    rel = osp.relpath(path, ROOT)[:-3].split(osp.sep)
    pkg = rel if rel[-1] == '__init__' else rel[:-1]
    if rel[-1] == '__init__':
        pkg = rel[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ''
            names = [name] + ([f'{name}.{a.name}' for a in node.names]
                              if name == 'kd_plugins' else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split('.')
            if parts[0] == 'kd_plugins' and len(parts) > 1:
                found.add(parts[1])
    return found


def test_imports_go_one_way():
    bad = []
    for path in glob.glob(osp.join(ROOT, 'kd_plugins', '**', '*.py'),
                          recursive=True):
        rel = osp.relpath(path, osp.join(ROOT, 'kd_plugins'))
        if rel == '__init__.py':
            continue  # the package registers everything
        own = rel.split(osp.sep)[0].removesuffix('.py')
        assert own in LAYER, f'{rel}: give its layer in LAYER'
        for dep in _package_imports(path) - {own}:
            assert dep in LAYER, f'{rel} imports unknown kd_plugins.{dep}'
            if LAYER[dep] > LAYER[own]:
                bad.append(f'{rel} ({own}) imports kd_plugins.{dep}')
    assert not bad, 'imports must go down the layers:\n' + '\n'.join(bad)
