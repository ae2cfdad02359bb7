from .atsc import ATSC
from .ie_dml import IEDML

__all__ = ['ATSC', 'IEDML']
