from .atsc import ATSC
from .fast_distill import FastDistill
from .ie_dml import IEDML

__all__ = ['ATSC', 'FastDistill', 'IEDML']
