# Runtime shared by every kd_plugins config.
# `custom_imports` registers kd_plugins (and applies its compat fixes) in any
# entry point that reads the config, mmpretrain's own tools/train.py included.
custom_imports = dict(imports=['kd_plugins'], allow_failed_imports=False)
default_scope = 'mmpretrain'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
# Re-seed python/numpy/torch at every epoch start from (seed, epoch), so that
# `--resume` continues exactly like an uninterrupted run.
# Stop at the first NaN/inf loss before it is checkpointed, naming the term.
custom_hooks = [
    dict(type='EpochSeedHook', priority='VERY_HIGH'),
    dict(type='NonFiniteLossHook', priority='ABOVE_NORMAL'),
    # distributed runs: check at every epoch end that all model replicas are
    # identical (no-op in one process); interval=N checks every N iterations
    dict(type='ReplicaCheckHook', interval=None),
    # distillers: student_X.pth (plain mmpretrain student) beside every
    # checkpoint X.pth, and student.py once, in the work dir
    dict(type='StudentCheckpointHook'),
    # SIGTERM / SIGUSR1 (slurm preemption, --signal, torchrun's SIGTERM):
    # finish the iteration, save preempt_iter_N.pth, exit 128 + signal with
    # one line; --resume goes on from that batch (with the resumable loops
    # of the _base_ schedules)
    dict(type='PreemptionHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # kd_plugins.compat switches to gloo when no GPU is present.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
