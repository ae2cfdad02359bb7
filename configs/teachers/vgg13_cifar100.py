# Train the standard CIFAR-100 KD teacher vgg13 (240 epochs, batch 64).
#   python tools/train.py configs/teachers/vgg13_cifar100.py
# Or convert a published RepDistiller / mdistiller checkpoint instead:
#   python tools/convert_repdistiller_ckpt.py ckpt_epoch_240.pth vgg13_cifar100.pth --arch vgg13
_base_ = [
    '../_base_/models/cifar/vgg13.py', '../_base_/datasets/cifar100_kd.py',
    '../_base_/schedules/cifar100_kd_240e.py', '../_base_/default_runtime.py'
]
model = _base_.vgg13
