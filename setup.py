"""kd_plugins: knowledge distillation for OpenMMLab image classification."""
import os.path as osp
from setuptools import find_packages, setup


def read_version():
    ns = {}
    path = osp.join(osp.dirname(__file__), 'kd_plugins', 'version.py')
    with open(path) as f:
        exec(f.read(), ns)
    return ns['__version__']


setup(
    name='kd_plugins',
    version=read_version(),
    description='Knowledge-distillation methods (AEKT, ATSC, IE-KD, KD layer) '
    'as OpenMMLab plug-ins for mmpretrain/mmrazor',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['kd_plugins', 'kd_plugins.*']),
    python_requires='>=3.9',
    install_requires=[
        # torch 2.14.1 + torchvision 0.29.1 (CPU machines) and
        # torch 2.11 + CUDA (GPU machines) are tested.
        'torch>=2.1,<2.15',
        'torchvision>=0.16,<0.30',
        # The pinned OpenMMLab stack (see kd_plugins/compat.py for its fixes).
        'mmengine==0.10.7',
        'mmcv-lite==2.1.0',
        'mmpretrain==1.2.0',
        'mmrazor==1.0.0',
        # mmengine needs pkg_resources; mmrazor imports these undeclared.
        'setuptools<81',
        'joblib',
        'scipy',
        'scikit-learn',
        'matplotlib',
    ],
    # dev: the test suite and its lint checks (tests/test_lint.py);
    # deploy: ONNX export of students and onnxruntime (tests/test_deploy.py)
    extras_require={
        'dev': ['pytest', 'flake8', 'isort'],
        'deploy': ['onnx', 'onnxruntime', 'onnxscript'],
    },
    license='Apache-2.0',
)
