from .aekt import AEKTLoss
from .ie_kd import IEExploreLoss, IEInheritLoss
from .kd_layer import KDLayerLoss

__all__ = ['AEKTLoss', 'IEInheritLoss', 'IEExploreLoss', 'KDLayerLoss']
