from .data_errors import DataErrorGuard, guard_loader
from .digits import DIGITS_CLASSES, Digits, load_digits_split
from .image_folder import write_digits_image_folder
from .sample_seeds import (SampleSeededDataset, SampleSeededSampler,
                           sample_seed, seed_loader)

__all__ = ['DataErrorGuard', 'Digits', 'DIGITS_CLASSES', 'guard_loader',
           'load_digits_split', 'write_digits_image_folder',
           'SampleSeededDataset', 'SampleSeededSampler', 'sample_seed',
           'seed_loader']
