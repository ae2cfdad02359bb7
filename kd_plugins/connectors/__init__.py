from .atsc import ATSCProjector

__all__ = ['ATSCProjector']
