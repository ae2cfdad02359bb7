from .aekt_head import AEKTHead

__all__ = ['AEKTHead']
