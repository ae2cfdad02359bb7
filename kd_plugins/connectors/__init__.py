from .atsc import ATSCProjector
from .ie_kd import IEAutoEncoder, IEStudentEncoder, IETeacherEncoder

__all__ = ['ATSCProjector', 'IEAutoEncoder', 'IEStudentEncoder',
           'IETeacherEncoder']
