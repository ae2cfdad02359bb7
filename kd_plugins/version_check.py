"""The versions of the OpenMMLab stack that kd_plugins runs with, checked
when ``import kd_plugins`` starts, before anything imports mmcv or mmrazor.

pip does not install mmcv for kd_plugins: the ``mmcv`` that ``mim`` installs
(CUDA ops, needed by mmdet/mmseg) and the pure-Python ``mmcv-lite`` are two
distributions that write the same ``mmcv/`` package, so a requirement on
either would put a second copy over a user's own (mmpretrain and mmrazor keep
mmcv in their ``mim`` extra for the same reason). torch and torchvision are
the user's build (CUDA or CPU), also not installed by kd_plugins. So a
missing or unsupported one is found here and reported in one line: what is
installed, what is supported, and the command that fixes it, instead of an
``AssertionError`` or ``ModuleNotFoundError`` from inside mmrazor.

``SUPPORTED`` is the single list of ranges: setup.py's ``install_requires``
and extras say the same (tests/test_install.py checks it), and
docs/compatibility.md says which versions were run.
"""
from __future__ import annotations

from importlib import metadata

from .errors import KDPluginsError

# distribution -> the versions kd_plugins supports (PEP 440)
SUPPORTED = {
    'mmengine': '>=0.10.0,<0.11',
    # mmrazor 1.0.0 asserts mmcv <= 2.1.0, mmpretrain 1.2.0 mmcv >= 2.0.0
    'mmcv': '>=2.0.0,<=2.1.0',
    'mmpretrain': '>=1.2.0,<1.3',
    'mmrazor': '>=1.0.0,<1.1',
}
# the version each fix installs: the one the CPU set-up (Makefile) installs
RECOMMENDED = {'mmengine': '0.10.7', 'mmcv': '2.1.0', 'mmpretrain': '1.2.0',
               'mmrazor': '1.0.0'}
# the distributions that install the ``mmcv`` package
MMCV_DISTS = ('mmcv', 'mmcv-lite', 'mmcv-full')
# needed, any version: the user's own build
USER_BUILDS = ('torch', 'torchvision')


class UnsupportedVersionError(KDPluginsError):
    """A package kd_plugins needs is missing or outside its supported
    range; the message names the installed and the supported versions and
    the command that fixes it.

    Not an ``ImportError`` (mmpretrain and mmrazor raise ``AssertionError``
    for theirs): mmengine's ``custom_imports`` would replace an
    ``ImportError`` by "Failed to import kd_plugins", so this line would not
    be the last one a user of mmpretrain's tools/train.py sees."""


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _supported(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidVersion:
        return False


def _mmcv_problem(found: dict) -> tuple[str, str] | None:
    """(problem, fix) for the mmcv package, from the distributions that
    install it (``found``: distribution -> version), or None."""
    want, spec = RECOMMENDED['mmcv'], SUPPORTED['mmcv']
    either = (f'mim install mmcv=={want} (with CUDA ops) or pip install '
              f'mmcv-lite=={want} (CPU only)')
    if not found:
        return f'mmcv{spec} (not installed)', either
    if len(found) > 1:
        both = ' and '.join(f'{d} {v}' for d, v in found.items())
        return (f'one mmcv distribution ({both} are installed: they write '
                'the same mmcv/ package)',
                f'pip uninstall -y {" ".join(found)}, then {either}')
    (dist, version), = found.items()
    if _supported(version, spec) and dist != 'mmcv-full':
        return None
    fix = {'mmcv': f'mim install mmcv=={want}',
           'mmcv-lite': f'pip install mmcv-lite=={want}'}.get(
               dist, f'pip uninstall -y {dist}, then {either}')
    return f'mmcv{spec} (installed: {dist} {version})', fix


def problems(installed=_installed) -> list[tuple[str, str]]:
    """(what is needed and what is installed, the fix) for every package
    that is missing or unsupported; empty when all is well."""
    found = []
    for dist in USER_BUILDS:
        if installed(dist) is None:
            found.append((f'{dist} (not installed)',
                          'install torch and torchvision for your CUDA '
                          'version or the CPU (https://pytorch.org)'))
    mmcv = _mmcv_problem({d: v for d in MMCV_DISTS
                          if (v := installed(d)) is not None})
    if mmcv:
        found.append(mmcv)
    for dist in ('mmengine', 'mmpretrain', 'mmrazor'):
        version, spec = installed(dist), SUPPORTED[dist]
        if version is None or not _supported(version, spec):
            state = 'not installed' if version is None \
                else f'installed: {version}'
            found.append((f'{dist}{spec} ({state})',
                          f'pip install {dist}=={RECOMMENDED[dist]}'))
    return found


def check() -> None:
    """Raise :class:`UnsupportedVersionError` (one line) when a package
    kd_plugins needs is missing or outside ``SUPPORTED``."""
    found = problems()
    if not found:
        return
    needs = '; '.join(need for need, _ in found)
    fixes, pip = [], []  # one `pip install` for the plain requirements
    for _, fix in found:
        words = fix.split(' ')
        if words[:2] == ['pip', 'install'] and len(words) == 3:
            pip.append(words[2])
        elif fix not in fixes:
            fixes.append(fix)
    if pip:
        fixes.append('pip install ' + ' '.join(pip))
    raise UnsupportedVersionError(
        f'kd_plugins needs {needs}. Fix: {"; ".join(fixes)} '
        '(see docs/compatibility.md).')
