"""kd_plugins: knowledge distillation for OpenMMLab image classification."""
import os.path as osp
import shutil
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    ns = {}
    path = osp.join(HERE, 'kd_plugins', 'version.py')
    with open(path) as f:
        exec(f.read(), ns)
    return ns['__version__']


class BuildWithMim(build_py):
    """A built package carries ``configs/`` and ``tools/`` under
    ``kd_plugins/.mim/``, as mmpretrain's wheel does, so a user without the
    checkout trains a shipped config (``<site-packages>/kd_plugins/.mim/
    configs/...``) with mmpretrain's tools/train.py or ours. Copies, never
    links; an editable install (``pip install -e .``) reads the checkout."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        mim = osp.join(self.build_lib, 'kd_plugins', '.mim')
        for name in ('configs', 'tools'):
            src, dst = osp.join(HERE, name), osp.join(mim, name)
            if osp.isdir(dst):
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))


setup(
    name='kd_plugins',
    version=read_version(),
    description='Knowledge-distillation methods (AEKT, ATSC, IE-KD, KD layer) '
    'as OpenMMLab plug-ins for mmpretrain/mmrazor',
    long_description=open(osp.join(HERE, 'README.md'),
                          encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['kd_plugins', 'kd_plugins.*']),
    cmdclass={'build_py': BuildWithMim},
    python_requires='>=3.9',
    # Ranges, not pins: installing kd_plugins leaves a user's versions as
    # they are when they are in these ranges (tests/test_install.py). The
    # ranges are kd_plugins/version_check.py's SUPPORTED, which `import
    # kd_plugins` checks; docs/compatibility.md says which versions were run.
    # Not here, as in mmpretrain and mmrazor: torch and torchvision (the
    # user's CUDA or CPU build) and mmcv: `mim install mmcv` (CUDA ops) and
    # `pip install mmcv-lite` (CPU) write the same mmcv/ package, so a
    # requirement on one would install it over the other; the extras below
    # name them.
    install_requires=[
        'mmengine>=0.10.0,<0.11',
        'mmpretrain>=1.2.0,<1.3',
        'mmrazor>=1.0.0,<1.1',
        'packaging',  # kd_plugins/version_check.py
        # mmengine needs pkg_resources; mmrazor imports these undeclared.
        'setuptools<81',
        'joblib',
        'scipy',
        'scikit-learn',
        'matplotlib',
    ],
    # mim: mmcv with CUDA ops, as mmpretrain's own `mim` extra (install it
    # with `mim install mmcv==2.1.0`);
    # lite: the pure-Python mmcv-lite, enough for every kd_plugins method
    # (the CPU set-up, `make install`, installs it explicitly);
    # dev: the test suite, its lint checks (tests/test_lint.py) and timm
    # (tests/test_distill_config.py's timm student);
    # deploy: ONNX export of students and onnxruntime (tests/test_deploy.py)
    extras_require={
        'mim': ['mmcv>=2.0.0,<=2.1.0'],
        'lite': ['mmcv-lite>=2.0.0,<=2.1.0'],
        'dev': ['pytest', 'flake8', 'isort', 'timm'],
        'deploy': ['onnx', 'onnxruntime', 'onnxscript'],
    },
    license='Apache-2.0',
)
