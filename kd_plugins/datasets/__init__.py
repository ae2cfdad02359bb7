from .data_errors import DataErrorGuard, guard_loader
from .digits import DIGITS_CLASSES, Digits, load_digits_split
from .image_folder import write_digits_image_folder

__all__ = ['DataErrorGuard', 'Digits', 'DIGITS_CLASSES', 'guard_loader',
           'load_digits_split', 'write_digits_image_folder']
