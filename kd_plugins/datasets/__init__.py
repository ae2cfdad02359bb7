from .data_errors import DataErrorGuard, guard_train_dataset
from .digits import DIGITS_CLASSES, Digits, load_digits_split
from .image_folder import write_digits_image_folder

__all__ = ['DataErrorGuard', 'Digits', 'DIGITS_CLASSES', 'load_digits_split',
           'guard_train_dataset', 'write_digits_image_folder']
