"""kd_plugins: knowledge-distillation methods for OpenMMLab classification.

``version_check`` runs first: a missing or unsupported torch, mmcv,
mmengine, mmpretrain or mmrazor is one line that names the versions and the
install command (nothing else is imported before it). ``compat`` comes
next: it fixes the known breakages of the supported stack (mmrazor 1.0.0 on
torch >= 2.1 and mmpretrain, weights-only resume, CPU launchers) before
anything imports mmrazor.
"""
# isort: off
from . import version_check  # (must stay first)

version_check.check()

from . import compat  # noqa: F401,E402  (before anything imports mmrazor)

import mmrazor.models  # noqa: F401,E402  registers mmrazor's distillers

from . import algorithms  # noqa: F401,E402
from . import connectors  # noqa: F401,E402
from . import datasets  # noqa: F401,E402
from . import engine  # noqa: F401,E402
from . import losses  # noqa: F401,E402
from . import models  # noqa: F401,E402
from . import teacher_cache  # noqa: F401,E402
from .version import __version__  # noqa: E402

__all__ = ['__version__']
