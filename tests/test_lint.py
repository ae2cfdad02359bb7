"""Code rules: flake8 and isort with mmpretrain's settings (setup.cfg), and
the package's import layering (tools -> engine -> algorithms -> losses,
connectors, models -> utils: imports only go down)."""
import ast
import glob
import os.path as osp

from tests.conftest import ROOT

PATHS = ['kd_plugins', 'tools', 'tests', 'benchmarks', 'setup.py',
         'configs']


# in this process (the fast tier, `make test-fast`, runs them: ~2 s)
def test_flake8_is_clean(monkeypatch, capsys):
    from flake8.api import legacy
    from flake8.main.options import JobsArgument
    monkeypatch.chdir(ROOT)  # flake8 reads setup.cfg from the working dir
    report = legacy.get_style_guide(jobs=JobsArgument('1')).check_files(PATHS)
    out = capsys.readouterr().out
    assert report.total_errors == 0, (
        f'flake8 found violations (fix them, or run `flake8` on the files):'
        f'\n{out[-4000:]}')


def test_isort_is_clean(monkeypatch, capsys):
    from isort.main import main
    monkeypatch.chdir(ROOT)  # isort reads setup.cfg from the working dir
    try:
        main(['--check-only', '--diff', *PATHS[:-2], 'setup.py'])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    assert not code, (
        f'isort found violations (fix them, or run `isort` on the files):'
        f'\n{out.out[-4000:]}{out.err[-2000:]}')


# a module may import its own layer and the layers below it
LAYER = {
    'errors': 0, 'version': 0, 'utils': 0, 'version_check': 0,
    'compat': 1,
    'losses': 2, 'connectors': 2, 'models': 2, 'datasets': 2,
    'teacher_cache': 2,
    'algorithms': 3, 'export': 3, 'kd_layer_stats': 3,
    'engine': 4, 'distill_config': 4, 'cache_teacher': 4,
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


BUILTIN_ERRORS = {
    'Exception', 'ValueError', 'KeyError', 'TypeError', 'RuntimeError',
    'FileNotFoundError', 'OSError', 'IndexError', 'AssertionError',
    'SystemExit', 'NotImplementedError', 'AttributeError', 'ImportError'}

# raises of built-in exceptions that are not user-facing errors, each with
# its reason: (file, enclosing function, exception)
ALLOWED_RAISES = {
    # the attribute protocol: __getattr__ of a data set wrapper must raise
    # AttributeError for what neither it nor the wrapped set has
    ('kd_plugins/datasets/data_errors.py', '__getattr__', 'AttributeError'),
    ('kd_plugins/datasets/sample_seeds.py', '__getattr__', 'AttributeError'),
    # mmengine's BaseModel contract: an unknown forward mode is a programming
    # error of the caller, not a config problem
    ('kd_plugins/algorithms/atsc.py', 'forward', 'ValueError'),
    # the exit code of the GPU check (its table says what failed); the tool
    # does not import kd_plugins, so its one CUDA message is a SystemExit
    ('tools/gpu_check.py', 'main', 'SystemExit'),
    # the tools' one line when kd_plugins' version check refuses the stack:
    # kd_plugins (hence its error classes) could not be imported
    ('tools/_common.py', '<module>', 'SystemExit'),
    # a checkout whose setup.py lost install_requires (not a user input);
    # the tool imports nothing of kd_plugins, to run on any Python
    ('tools/collect_wheels.py', '_setup_keyword', 'RuntimeError'),
    # where the family becomes the one `kd_plugins: ...` line
    ('tools/_common.py', 'run_main', 'SystemExit'),
    # the demo's own failures name the log to read
    ('tools/demo.py', 'run_prep', 'SystemExit'),
    # a demo stage built wrongly (a programming error, not a user input)
    ('tools/demo.py', 'run_all', 'ValueError'),
    ('tools/demo.py', 'train_teachers', 'SystemExit'),
}


def _raises(path):
    tree = ast.parse(open(path, encoding='utf-8').read())
    found = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) \
                    else child.exc
                if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                    found.append((func, exc.id, child.lineno))
            visit(child, name)

    visit(tree, '<module>')
    return found


def test_user_facing_errors_are_one_family():
    """Problems a user can fix raise kd_plugins.errors classes (one
    ``kd_plugins:`` line with the fix, no traceback); a bare built-in raise
    is allowed only where listed with its reason."""
    bad = []
    files = glob.glob(osp.join(ROOT, 'kd_plugins', '**', '*.py'),
                      recursive=True) + glob.glob(
                          osp.join(ROOT, 'tools', '**', '*.py'),
                          recursive=True) + glob.glob(
                              osp.join(ROOT, 'benchmarks', '*.py'))
    for path in files:
        rel = osp.relpath(path, ROOT)
        for func, exc, line in _raises(path):
            if (rel, func, exc) not in ALLOWED_RAISES:
                bad.append(f'{rel}:{line} raise {exc} in {func}()')
    assert not bad, ('raise a kd_plugins.errors class (ConfigError, '
                     'MissingFileError, ArgumentError, ...) instead:\n'
                     + '\n'.join(bad))
