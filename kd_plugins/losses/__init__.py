from .aekt import AEKTLoss
from .ie_kd import IEExploreLoss, IEInheritLoss

__all__ = ['AEKTLoss', 'IEInheritLoss', 'IEExploreLoss']
