"""Installing kd_plugins beside a user's OpenMMLab environment (issue #38).

- ``import kd_plugins`` names a missing or unsupported torch, mmcv,
  mmengine, mmpretrain or mmrazor in one line, with the installed and the
  supported versions and the install command (kd_plugins/version_check.py);
- pip installs nothing but kd_plugins where a user's mmcv (mim's, with CUDA
  ops) and a torch/mmengine/mmpretrain/mmrazor within the supported ranges
  are installed: no mmcv-lite over their mmcv, no other version of theirs;
- a built wheel carries configs/ and tools/ under ``kd_plugins/.mim/``, and
  mmpretrain's own tools/train.py trains a shipped config from it, outside
  the checkout, in a fresh interpreter.

Scratch environments share this venv's packages: their site-packages hold
a symlink to every entry of this venv's, except kd_plugins and the metadata
(``*.dist-info``) of the distributions a test replaces by a stand-in: a tiny
wheel built here that holds only a name and a version (the code stays this
venv's). pip runs with ``--no-index`` and a local wheelhouse, without the
machine's pip configuration, and with a proxy that refuses every
connection: nothing is downloaded. pip never uninstalls in them (no
installed distribution has a stand-in's name), so nothing is removed
through a symlink.
"""
import base64
import hashlib
import importlib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from fnmatch import fnmatch
from importlib import metadata

import pytest

import kd_plugins
from kd_plugins import version_check
from tests.conftest import ROOT, load_tool

SITE = sysconfig.get_path('purelib')
# what the checkout's own install put there (pip install [-e] ., or a
# legacy `setup.py develop`: its egg-link and easy-install.pth)
OWN = ('kd?plugins*', '__editable__*kd?plugins*', 'easy-install.pth',
       '__pycache__')
# stand-ins in every wheelhouse: what a wrong requirement would install
# (mmcv-lite over a user's mmcv, a newer torch or mmengine, ...), so that
# such a mutation changes what pip installs instead of failing to resolve
WHEELHOUSE = dict(version_check.RECOMMENDED, **{
    'mmcv-lite': version_check.RECOMMENDED['mmcv'],
    'torch': '99.0', 'torchvision': '99.0'})


def _low(dist):
    """The lowest version ``SUPPORTED`` admits for ``dist``."""
    return re.search(r'>=\s*([\w.]+)', version_check.SUPPORTED[dist])[1]


# ---------------------------------------------------------------------------
# helpers: stand-in wheels, scratch environments, pip without a network
# ---------------------------------------------------------------------------
def stand_in_wheel(out_dir, name, version):
    """A wheel of ``name`` ``version`` that installs only its metadata."""
    norm = re.sub(r'[-_.]+', '_', name)
    info = f'{norm}-{version}.dist-info'
    files = {
        f'{info}/METADATA': (f'Metadata-Version: 2.1\nName: {name}\n'
                             f'Version: {version}\n'),
        f'{info}/WHEEL': ('Wheel-Version: 1.0\nGenerator: kd_plugins-tests\n'
                          'Root-Is-Purelib: true\nTag: py3-none-any\n'),
    }
    record = ''
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(
            text.encode()).digest()).rstrip(b'=').decode()
        record += f'{path},sha256={digest},{len(text.encode())}\n'
    files[f'{info}/RECORD'] = record + f'{info}/RECORD,,\n'
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, f'{norm}-{version}-py3-none-any.whl')
    with zipfile.ZipFile(path, 'w') as whl:
        for name_, text in files.items():
            whl.writestr(name_, text)
    return path


def wheelhouse(out_dir, versions=WHEELHOUSE):
    """A folder of stand-in wheels for pip's --find-links."""
    for name, version in versions.items():
        stand_in_wheel(out_dir, name, version)
    return str(out_dir)


def offline_env(**extra):
    """The environment for scratch interpreters and pip: no PYTHONPATH (the
    checkout is not importable unless asked), no pip configuration (this
    machine's find-links and indexes), no network."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PIP_', 'PYTHON'))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK='1',
               PIP_NO_INPUT='1', HTTP_PROXY='http://127.0.0.1:9',
               HTTPS_PROXY='http://127.0.0.1:9', NO_PROXY='')
    env.update(extra)
    return env


def run(cmd, cwd, env=None, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env or offline_env(),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} exited {proc.returncode}\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def scratch_env(path, stand_ins):
    """A venv sharing this venv's packages but kd_plugins, with each
    distribution of ``stand_ins`` (name -> version) replaced by a stand-in
    (the metadata of every mmcv distribution is left out too). Returns
    (python, site-packages)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    site = sysconfig.get_path('purelib', vars=dict(base=path, platbase=path))
    skip = list(OWN)
    for dist in set(stand_ins) | set(version_check.MMCV_DISTS):
        norm = re.sub(r'[-_.]+', '_', dist).lower()
        skip += [f'{norm}-*.dist-info', f'{norm}-*.egg-info']
    for entry in os.listdir(SITE):
        if not any(fnmatch(entry.lower(), p) for p in skip):
            os.symlink(osp.join(SITE, entry), osp.join(site, entry))
    python = osp.join(path, 'bin', 'python')
    wheels = [stand_in_wheel(osp.join(path, 'stand_ins'), n, v)
              for n, v in stand_ins.items()]
    if wheels:
        run([python, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps',
             *wheels], cwd=path)
    return python, site


def source_copy(dst):
    """What a checkout builds from (the working tree's files, not git's)."""
    for name in ('setup.py', 'setup.cfg', 'README.md', 'MANIFEST.in'):
        if osp.isfile(osp.join(ROOT, name)):
            os.makedirs(dst, exist_ok=True)
            shutil.copy(osp.join(ROOT, name), dst)
    for name in ('kd_plugins', 'configs', 'tools'):
        shutil.copytree(osp.join(ROOT, name), osp.join(dst, name),
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    return str(dst)


def pip_would_install(python, target, houses, cwd, editable=False):
    """Names pip would install for ``target`` (a dry run, offline)."""
    report = osp.join(cwd, 'report.json')
    run([python, '-m', 'pip', 'install', '--dry-run', '--report', report,
         '--no-index', '--find-links', houses, '--no-build-isolation',
         *(['-e'] if editable else []), target], cwd=cwd)
    with open(report) as f:
        return sorted(i['metadata']['name'] for i in json.load(f)['install'])


# ---------------------------------------------------------------------------
# setup.py and the import-time check say the same
# ---------------------------------------------------------------------------
def test_setup_py_requires_the_checked_ranges_and_no_mmcv_or_torch():
    cw = load_tool('collect_wheels')
    requires = {cw._name(r): r for r in cw.install_requires()}
    extras = cw.extras_require()
    for dist in ('mmengine', 'mmpretrain', 'mmrazor'):
        assert requires[dist] == dist + version_check.SUPPORTED[dist]
    # the user's: mim's mmcv or mmcv-lite, and their torch build
    for dist in (*version_check.MMCV_DISTS, *version_check.USER_BUILDS):
        assert dist not in requires, dist
    spec = version_check.SUPPORTED['mmcv']
    assert extras['mim'] == ['mmcv' + spec]
    assert extras['lite'] == ['mmcv-lite' + spec]
    assert 'timm' in extras['dev']  # tests/test_distill_config.py's student


# ---------------------------------------------------------------------------
# the check at `import kd_plugins` (in this process: the package re-runs its
# __init__ with importlib.metadata.version answering for the given versions)
# ---------------------------------------------------------------------------
def _import_with(monkeypatch, **versions):
    """``import kd_plugins`` where the distributions have ``versions``
    (name with _ for -, None: not installed); the mmcv distributions are
    mmcv-lite 2.1.0 alone unless given, the others as installed here."""
    versions = dict({'mmcv': None, 'mmcv-full': None,
                     'mmcv-lite': version_check.RECOMMENDED['mmcv']},
                    **{k.replace('_', '-'): v for k, v in versions.items()})
    real = metadata.version

    def version(dist):
        if dist in versions:
            if versions[dist] is None:
                raise metadata.PackageNotFoundError(dist)
            return versions[dist]
        return real(dist)

    monkeypatch.setattr(metadata, 'version', version)
    try:
        importlib.reload(kd_plugins)
    finally:
        monkeypatch.undo()


def _refused(monkeypatch, **versions):
    with pytest.raises(version_check.UnsupportedVersionError) as err:
        _import_with(monkeypatch, **versions)
    message = str(err.value)
    assert '\n' not in message and message.startswith('kd_plugins needs ')
    return message


def test_mmcv_from_mim_or_mmcv_lite_in_the_range_and_no_other(monkeypatch):
    low, high = _low('mmcv'), version_check.RECOMMENDED['mmcv']
    for dist in ('mmcv', 'mmcv-lite'):
        others = {d.replace('-', '_'): None
                  for d in version_check.MMCV_DISTS if d != dist}
        for ok in (low, high):
            _import_with(monkeypatch, **others, **{dist: ok})
        message = _refused(monkeypatch, **others, **{dist: '2.2.0'})
        assert f'mmcv>=2.0.0,<=2.1.0 (installed: {dist} 2.2.0)' in message
        fix = 'mim install mmcv==2.1.0' if dist == 'mmcv' \
            else 'pip install mmcv-lite==2.1.0'
        assert message.endswith(f'Fix: {fix} (see docs/compatibility.md).')
    message = _refused(monkeypatch, mmcv=None, mmcv_lite=None,
                       mmcv_full=None)
    assert ('mmcv>=2.0.0,<=2.1.0 (not installed). Fix: mim install '
            'mmcv==2.1.0 (with CUDA ops) or pip install mmcv-lite==2.1.0 '
            '(CPU only)') in message
    # two distributions writing the one mmcv/ package
    message = _refused(monkeypatch, mmcv='2.1.0', mmcv_lite='2.1.0',
                       mmcv_full=None)
    assert ('mmcv 2.1.0 and mmcv-lite 2.1.0 are installed' in message
            and 'pip uninstall -y mmcv mmcv-lite, then mim install' in message)
    message = _refused(monkeypatch, mmcv=None, mmcv_lite=None,
                       mmcv_full='1.7.2')
    assert '(installed: mmcv-full 1.7.2)' in message


@pytest.mark.parametrize('dist', ['mmengine', 'mmpretrain', 'mmrazor'])
def test_openmmlab_packages_in_the_range_and_no_other(monkeypatch, dist):
    key = dist.replace('-', '_')
    _import_with(monkeypatch, **{key: _low(dist)})
    _import_with(monkeypatch, **{key: version_check.RECOMMENDED[dist]})
    spec = version_check.SUPPORTED[dist]
    fix = f'Fix: pip install {dist}=={version_check.RECOMMENDED[dist]} '
    below = {'mmengine': '0.9.1', 'mmpretrain': '1.1.1',
             'mmrazor': '0.3.1'}[dist]
    for version, state in ((below, f'installed: {below}'),
                           ('9.0.0', 'installed: 9.0.0'),
                           (None, 'not installed')):
        message = _refused(monkeypatch, **{key: version})
        assert f'needs {dist}{spec} ({state}). {fix}' in message


def test_missing_torch_and_several_problems_make_one_line(monkeypatch):
    message = _refused(monkeypatch, torch=None)
    assert message == (
        'kd_plugins needs torch (not installed). Fix: install torch and '
        'torchvision for your CUDA version or the CPU (https://pytorch.org) '
        '(see docs/compatibility.md).')
    message = _refused(monkeypatch, torchvision=None, mmengine='0.9.1',
                       mmrazor=None)
    assert message == (
        'kd_plugins needs torchvision (not installed); '
        'mmengine>=0.10.0,<0.11 (installed: 0.9.1); mmrazor>=1.0.0,<1.1 (not '
        'installed). Fix: install torch and torchvision for your CUDA version '
        'or the CPU (https://pytorch.org); pip install mmengine==0.10.7 '
        'mmrazor==1.0.0 (see docs/compatibility.md).')


# ---------------------------------------------------------------------------
# pip: nothing but kd_plugins beside a user's stack (dry runs, offline)
# ---------------------------------------------------------------------------
STACKS = {
    # a GPU user's environment: mim's mmcv, the versions tested here
    'mmcv-2.1.0': dict(mmcv='2.1.0'),
    # the lowest versions kd_plugins supports (an older torch build too)
    'lowest': dict(mmcv=_low('mmcv'), torch='2.1.2', torchvision='0.16.2',
                   **{d: _low(d) for d in ('mmengine', 'mmpretrain',
                                           'mmrazor')}),
}


@pytest.mark.e2e  # starts pip and python
@pytest.mark.parametrize('editable', [False, True], ids=['.', '-e .'])
@pytest.mark.parametrize('stack', list(STACKS))
def test_pip_install_beside_a_users_mmcv_installs_only_kd_plugins(
        tmp_path, stack, editable):
    """With a stand-in ``mmcv`` distribution installed, ``pip install
    [-e] .`` resolves to kd_plugins alone: no mmcv-lite (its stand-in is in
    the wheelhouse), no other torch, mmengine, mmpretrain or mmrazor."""
    houses = wheelhouse(tmp_path / 'wheels')
    python, site = scratch_env(str(tmp_path / 'env'), STACKS[stack])
    mmcv, = metadata.distributions(name='mmcv', path=[site])
    assert mmcv.version == STACKS[stack]['mmcv']
    src = source_copy(tmp_path / 'src')
    assert pip_would_install(python, src, houses, str(tmp_path),
                             editable) == ['kd_plugins']


@pytest.mark.e2e  # starts pip and python
def test_unsupported_mmcv_is_one_line_in_a_fresh_interpreter(tmp_path):
    """A user's mmcv 2.2.0 (too new for mmrazor 1.0.0): `import kd_plugins`
    and mmpretrain's own tools/train.py end with the one line; kd_plugins'
    tools/train.py prints that line alone."""
    python, _ = scratch_env(str(tmp_path / 'env'), {'mmcv': '2.2.0'})
    env = offline_env(PYTHONPATH=ROOT)
    line = ('kd_plugins.version_check.UnsupportedVersionError: kd_plugins '
            'needs mmcv>=2.0.0,<=2.1.0 (installed: mmcv 2.2.0). Fix: mim '
            'install mmcv==2.1.0 (see docs/compatibility.md).')
    proc = run([python, '-c', 'import kd_plugins'], str(tmp_path), env,
               check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == line
    import mmpretrain
    train = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools',
                     'train.py')
    proc = run([python, train, osp.join(ROOT, 'configs/demo/kd_digits.py'),
                '--work-dir', str(tmp_path / 'wd')], str(tmp_path), env,
               check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == line
    # kd_plugins' own tools: that line alone, no traceback
    proc = run([python, osp.join(ROOT, 'tools/train.py'),
                osp.join(ROOT, 'configs/demo/kd_digits.py')], str(tmp_path),
               env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == 'kd_plugins: ' + line.split(': ', 1)[1]


# ---------------------------------------------------------------------------
# a built wheel, installed without the checkout, trains a shipped config
# ---------------------------------------------------------------------------
@pytest.mark.e2e  # starts pip and python
def test_built_wheel_trains_a_shipped_config_outside_the_checkout(tmp_path):
    houses = wheelhouse(tmp_path / 'wheels')
    python, site = scratch_env(str(tmp_path / 'env'), {'mmcv': '2.1.0'})
    src = source_copy(tmp_path / 'src')
    run([python, '-m', 'pip', 'wheel', '-q', '--no-index', '--no-deps',
         '--no-build-isolation', '-w', houses, src], cwd=str(tmp_path))
    wheel = osp.join(houses, f'kd_plugins-{kd_plugins.__version__}-py3-none-'
                     'any.whl')
    with zipfile.ZipFile(wheel) as whl:
        shipped = {n[len('kd_plugins/.mim/'):] for n in whl.namelist()
                   if n.startswith('kd_plugins/.mim/')}
    # every file of configs/ and tools/ (copies: a wheel holds no links)
    assert shipped == {osp.relpath(osp.join(d, f), src)
                       for top in ('configs', 'tools')
                       for d, _, files in os.walk(osp.join(src, top))
                       for f in files}
    # the wheel's requirements beside the user's mmcv: nothing else
    user = tmp_path / 'user'  # a directory outside the checkout
    user.mkdir()
    assert pip_would_install(python, wheel, houses, str(user)) == [
        'kd_plugins']
    # installed without .pyc files: they appear when a run imports it
    run([python, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps',
         '--no-compile', wheel], cwd=str(user))
    pkg = osp.join(site, 'kd_plugins')
    assert not osp.islink(pkg) and not osp.exists(
        osp.join(pkg, '__pycache__'))
    import mmpretrain
    train = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools',
                     'train.py')
    config = osp.join(pkg, '.mim', 'configs', 'demo', 'student_digits.py')
    work_dir = str(user / 'work_dir')
    proc = run([python, train, config, '--work-dir', work_dir,
                '--cfg-options', 'train_cfg.max_epochs=2',
                'train_cfg.val_interval=3',  # no validation
                'train_dataloader.dataset.num_per_class=4',  # 40 images
                'train_dataloader.batch_size=20',
                'default_hooks.logger.interval=1'], cwd=str(user))
    log = proc.stdout + proc.stderr
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth')), log[-3000:]
    assert "type='Digits'" in log and 'Epoch(train) [2][2/2]' in log
    # the run imported the installed kd_plugins (not the checkout's)
    assert osp.isfile(osp.join(pkg, '__pycache__',
                               f'__init__.{sys.implementation.cache_tag}.pyc'))
    proc = run([python, '-c', 'import importlib.util as u; '
                'print(u.find_spec("kd_plugins").origin)'], cwd=str(user))
    assert proc.stdout.strip() == osp.join(pkg, '__init__.py')


# ---------------------------------------------------------------------------
# tools/collect_wheels.py: the offline node's list follows setup.py
# ---------------------------------------------------------------------------
@pytest.mark.e2e  # starts pip and python
def test_collect_wheels_lists_what_setup_requires(tmp_path):
    """The offline-node wheel list is setup.py's install_requires (minus
    what the node has) plus mmcv-lite (the `lite` extra; not with
    ``--node-has mmcv``) and the transitive extras; pip downloads them from
    a local wheelhouse of stand-ins (no network)."""
    from packaging.requirements import Requirement
    cw = load_tool('collect_wheels')
    reqs = cw.requirements()
    names = {cw._name(r) for r in reqs}
    for r in cw.install_requires() + cw.extras_require()['lite']:
        assert (cw._name(r) in names) != (cw._name(r) in cw.NODE_HAS), r
    assert {'torch', 'torchvision', 'mmcv'}.isdisjoint(names)
    assert {'mmrazor', 'mmengine', 'mmpretrain', 'mmcv-lite'} <= names
    assert 'scikit-learn<1.8' in reqs  # the node's pin, not setup.py's
    assert 'mmcv-lite' not in {cw._name(r) for r in cw.requirements(
        cw.NODE_HAS + ('mmcv', ))}
    # a stand-in wheel that fits each requirement; pip picks each one
    houses = tmp_path / 'wheels'
    expected = set()
    for r in map(Requirement, reqs):
        version = next(v for v in ('0.0.1', *re.findall(
            r'[\d.]+', str(r.specifier)), '99.0') if r.specifier.contains(v))
        expected.add(osp.basename(stand_in_wheel(houses, r.name, version)))
    stand_in_wheel(houses, 'mmcv', '2.1.0')  # not on the list: not taken
    out = tmp_path / 'out'
    run([sys.executable, 'tools/collect_wheels.py', '--out', str(out),
         '--find-links', str(houses)], cwd=ROOT)
    assert set(os.listdir(out)) == expected
