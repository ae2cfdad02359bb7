from .digits import DIGITS_CLASSES, Digits, load_digits_split
from .image_folder import write_digits_image_folder

__all__ = ['Digits', 'DIGITS_CLASSES', 'load_digits_split',
           'write_digits_image_folder']
