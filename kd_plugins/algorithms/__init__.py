from .atsc import ATSC
from .fast_distill import FastDistill
from .ie_dml import IEDML
from .multi_teacher import MultiTeacherDistill

__all__ = ['ATSC', 'FastDistill', 'IEDML', 'MultiTeacherDistill']
