from .atsc import ATSC, ATSCOptimWrapperConstructor

__all__ = ['ATSC', 'ATSCOptimWrapperConstructor']
