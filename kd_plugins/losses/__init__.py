from .aekt import AEKTLoss

__all__ = ['AEKTLoss']
