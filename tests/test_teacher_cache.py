"""Teacher caches (#23): replay transforms, the cache store, cached training.

A small Digits set (6 images per class: 60) and a random-init teacher saved
as a checkpoint: what is checked (the stored views and logits are what the
live teacher gives, the run's losses and gradients are the live run's) does
not depend on a trained teacher.
"""
import copy
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from kd_plugins.cache_teacher import CacheBuilder, sample_seed
from kd_plugins.errors import ConfigError, KDPluginsError
from kd_plugins.teacher_cache import LOGITS_KEY
from kd_plugins.teacher_cache.replay import (VIEW_KEY, ViewParams,
                                             enumerate_views, replay_pipeline)
from kd_plugins.teacher_cache.store import (open_shard, read_index,
                                            topk_logits, write_index)
from tests.conftest import ROOT, run_tool

CFG = osp.join(ROOT, 'configs/demo/kd_digits.py')
N_PER_CLASS = 6  # 60 images


def _cfg(ckpt, **model):
    cfg = Config.fromfile(CFG)
    cfg.train_dataloader.dataset.num_per_class = N_PER_CLASS
    cfg.model.teacher_ckpt = ckpt
    cfg.model.update(model)
    return cfg


@pytest.fixture(autouse=True)
def _scope():
    """Transforms by their mmpretrain names; the default scope is given
    back after the test (others build in mmrazor's)."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """(cfg, teacher ckpt, cache dir): a --views all cache of the 60
    images (25 views each: RandomCrop 32, padding 2)."""
    from mmrazor.registry import MODELS
    tmp = tmp_path_factory.mktemp('cache')
    ckpt = str(tmp / 'teacher.pth')
    torch.manual_seed(1)
    cfg = _cfg(ckpt)
    teacher = MODELS.build(copy.deepcopy(cfg.model.teacher))
    with torch.no_grad():  # a confident teacher, as a trained one is: the
        # KD gradient (p_s - p_t) is then not a difference of near-uniform
        # distributions, which fp16 logits would dominate
        teacher.head.fc.weight.mul_(30)
    torch.save(dict(state_dict=teacher.state_dict()), ckpt)
    out = str(tmp / 'all')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        CacheBuilder(cfg, out, views='all', batch_size=100).run()
    return cfg, ckpt, out


def _models(cfg, cache_dir):
    """(live FastDistill, cached FastDistill) with the same student."""
    from mmrazor.registry import MODELS
    live = MODELS.build(copy.deepcopy(cfg.model))
    cached = MODELS.build(dict(copy.deepcopy(cfg.model),
                               teacher_cache=cache_dir))
    cached.student.load_state_dict(live.student.state_dict())
    return live, cached


def _cached_set(cfg, cache_dir):
    from mmpretrain.registry import DATASETS
    return DATASETS.build(dict(type='KDCachedViews', cache=cache_dir,
                               dataset=copy.deepcopy(
                                   cfg.train_dataloader.dataset)))


# ------------------------------------------------------------- replay
def _img(h=32, w=32, seed=0):
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3), np.uint8)


def test_replay_transforms_record_apply_and_draw_like_their_parents():
    from mmcv.transforms import Compose
    pipe = [dict(type='RandomCrop', crop_size=32, padding=4),
            dict(type='RandomFlip', prob=0.5, direction='horizontal')]
    live = Compose(copy.deepcopy(pipe))
    rep = Compose(replay_pipeline(pipe))
    img = _img()
    for seed in range(5):
        np.random.seed(seed)
        want = live(dict(img=img.copy()))['img']
        np.random.seed(seed)
        view = ViewParams('record')
        got = rep(dict(img=img.copy(), **{VIEW_KEY: view}))['img']
        np.testing.assert_array_equal(got, want)  # same draws, same view
        again = rep(dict(img=img.copy(),
                         **{VIEW_KEY: ViewParams('apply', view.params)}))
        np.testing.assert_array_equal(again['img'], want)
        np.random.seed(seed)  # without a view: the parents
        np.testing.assert_array_equal(rep(dict(img=img.copy()))['img'], want)
    # CIFAR's space: 9 x 9 offsets x 2 flips = 162 views, all distinct
    table = enumerate_views(rep, dict(img=img))
    assert table.shape == (162, 5)
    assert len({tuple(r) for r in table}) == 162
    assert set(table[:, 4]) == {0, 1}  # flipped, not flipped


@pytest.mark.parametrize('bad', ['RandAugment', 'ColorJitter',
                                 'RandomErasing', 'Mixup', 'Equalize',
                                 'Invert'])
def test_unreplayable_transform_is_refused_by_name(bad):
    pipe = [dict(type='RandomCrop', crop_size=32), dict(type=bad),
            dict(type='PackInputs')]
    with pytest.raises(ConfigError, match=rf'pipeline\[1\] is {bad}'):
        replay_pipeline(pipe)


def test_views_all_refuses_a_continuous_space():
    from mmcv.transforms import Compose
    rep = Compose(replay_pipeline([dict(type='RandomResizedCrop',
                                        scale=16)]))
    with pytest.raises(ConfigError, match='continuous range'):
        enumerate_views(rep, dict(img=_img()))


def test_topk_marginal_smoothing_by_hand():
    z = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    logp = torch.log_softmax(z, -1)
    v, i = logp.topk(2, -1)
    out = topk_logits(v.numpy(), i.numpy(), 5)
    p = logp.exp()[0]
    rest = (1 - p[0] - p[1]) / 3  # the other three share the rest's mass
    want = torch.log(torch.stack([p[0], p[1], rest, rest, rest]))
    torch.testing.assert_close(out[0], want)
    torch.testing.assert_close(out.exp().sum(), torch.tensor(1.0))


# -------------------------------------------------------------- store
def test_cache_holds_the_live_teachers_logits_of_every_view(cache):
    cfg, ckpt, out = cache
    index = read_index(out)
    assert index['status'] == 'complete' and index['views'] == 'all'
    assert index['views_per_sample'] == 25 and index['length'] == 60
    assert index['logit_sources'] == ['head.fc']
    shard = open_shard(out, index, 0, 'r')
    assert shard['done'].all()
    live, _ = _models(cfg, out)
    ds = _cached_set(cfg, out).dataset  # the replay pipeline
    for idx in (0, 37):
        info = ds.get_data_info(idx)
        table = shard['params'][idx]
        assert sorted(map(tuple, table)) == sorted(map(tuple, enumerate_views(
            ds.pipeline, info)))
        views = [ds.pipeline(dict(copy.deepcopy(info), **{
            VIEW_KEY: ViewParams('apply', r)})) for r in table]
        data = live.data_preprocessor(pseudo_collate(views), True)
        with torch.no_grad():
            want = live.teacher(data['inputs'], mode='tensor')
        got = torch.from_numpy(shard['logits0'][idx].astype(np.float32))
        torch.testing.assert_close(got, want, atol=2e-3 * want.abs().max(),
                                   rtol=1e-3)  # fp16 storage


# ---------------------------------------------------------- training
@pytest.mark.parametrize('loss', ['KLDivergence', 'DISTLoss'])
def test_losses_and_gradients_from_the_cache_equal_the_live_teachers(
        cache, loss):
    """KD and another logit-only mmrazor loss (DIST, Huang et al. 2022)
    from the cache: the live teacher's losses and student gradients when its
    logits are rounded to fp16 as the cache stores them (tight), and within
    fp16 storage tolerance of the unrounded live teacher's (KD)."""
    cfg, _, out = cache
    if loss == 'DISTLoss':
        cfg = copy.deepcopy(cfg)
        dist = cfg.model.distiller
        dist.distill_losses = dict(loss_kd=dict(type='DISTLoss', tau=4.0))
        dist.loss_forward_mappings = dict(loss_kd=dict(
            logits_S=dict(from_student=True, recorder='fc'),
            logits_T=dict(from_student=False, recorder='fc')))
    live, cached = _models(cfg, out)
    assert not list(cached.teacher.parameters())  # no teacher weights
    assert sum(p.numel() for p in live.teacher.parameters()) > 0
    ds = _cached_set(cfg, out)
    np.random.seed(3)
    batch = pseudo_collate([ds[i] for i in range(16)])

    def step(model):
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        model.zero_grad()
        loss = model.loss(data['inputs'], data['data_samples'])
        sum(loss.values()).backward()
        return ({k: v.detach() for k, v in loss.items()},
                [p.grad.clone() for p in model.student.parameters()])
    exact, cache_res = step(live), step(cached)
    fc = live.teacher.head.fc
    fc.forward = lambda x, f=fc.forward: f(x).half().float()
    rounded = step(live)
    for want, rtol, atol, gtol in ((rounded, 1e-5, 1e-7, (1e-4, 1e-7)),
                                   (exact, 2e-3, 1e-4, (2e-2, 2e-4))):
        if want is exact and loss == 'DISTLoss':
            continue  # Pearson terms: fp16 moves a few gradients by 5 %
        assert want[0].keys() == cache_res[0].keys()
        for k in want[0]:
            torch.testing.assert_close(cache_res[0][k], want[0][k],
                                       rtol=rtol, atol=atol)
        for a, b in zip(want[1], cache_res[1]):
            torch.testing.assert_close(b, a, rtol=gtol[0], atol=gtol[1])


def test_two_teacher_cache_combines_as_the_live_ensemble(cache, tmp_path):
    """MultiTeacherDistill: one cache of both teachers; with each combine
    rule the losses and gradients are the live ensemble's (fp16
    tolerance). Or one cache per teacher: the same views and logits; the
    caches in teacher order, one per teacher, of the same views."""
    from mmrazor.registry import MODELS
    _, ckpt, _ = cache
    mt = Config.fromfile(osp.join(ROOT, 'configs/demo/mt_kd_digits.py'))
    mt.train_dataloader.dataset.num_per_class = N_PER_CLASS
    torch.manual_seed(2)
    second = MODELS.build(copy.deepcopy(mt.model.teachers[1]))
    with torch.no_grad():
        second.head.fc.weight.mul_(30)
    ckpt2 = str(tmp_path / 'teacher2.pth')
    torch.save(dict(state_dict=second.state_dict()), ckpt2)
    mt.model.teacher_ckpts = [ckpt, ckpt2]
    out = str(tmp_path / 'mt')
    CacheBuilder(mt, out, views=2, batch_size=120).run()
    assert len(read_index(out)['teachers']) == 2
    ds = _cached_set(mt, out)
    batch = pseudo_collate([ds[i] for i in range(0, 60, 4)])
    for combine in ('mean_logits', 'mean_probs', 'confidence'):
        live = MODELS.build(dict(copy.deepcopy(mt.model), combine=combine))
        cached = MODELS.build(dict(copy.deepcopy(mt.model), combine=combine,
                                   teacher_cache=out))
        cached.student.load_state_dict(live.student.state_dict())
        assert not list(cached.teacher.parameters())
        losses, grads = [], []
        for model in (live, cached):
            data = model.data_preprocessor(copy.deepcopy(batch), True)
            model.zero_grad()
            loss = model.loss(data['inputs'], data['data_samples'])
            sum(loss.values()).backward()
            losses.append({k: v.detach() for k, v in loss.items()})
            grads.append([p.grad.clone() for p in model.student.parameters()])
        assert losses[0].keys() == losses[1].keys(), combine
        for k in losses[0]:
            torch.testing.assert_close(losses[1][k], losses[0][k], rtol=2e-3,
                                       atol=1e-4, msg=f'{combine} {k}')
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-4)
    # one cache per teacher (single-teacher builds, same --views and
    # --seed): the same views and logits as the cache of both
    singles = []
    for k, c in enumerate((ckpt, ckpt2)):
        singles.append(str(tmp_path / f'single{k}'))
        CacheBuilder(_cfg(c), singles[-1], views=2, batch_size=120).run()
    both, split = _cached_set(mt, out), _cached_set(mt, singles)
    for i in (0, 31, 59):
        np.random.seed(i)
        a = both[i]
        np.random.seed(i)
        b = split[i]
        assert torch.equal(a['inputs'], b['inputs'])
        torch.testing.assert_close(b['data_samples'].get(LOGITS_KEY),
                                   a['data_samples'].get(LOGITS_KEY),
                                   rtol=0, atol=0)
    model = MODELS.build(dict(copy.deepcopy(mt.model), teacher_cache=singles))
    assert [t.k for t in model.teacher.teachers] == [0, 1]
    with pytest.raises(ConfigError, match='another checkpoint of the '
                       'teacher'):  # teacher order
        MODELS.build(dict(copy.deepcopy(mt.model),
                          teacher_cache=singles[::-1]))
    with pytest.raises(ConfigError, match='lists 3 caches for 2 teachers'):
        MODELS.build(dict(copy.deepcopy(mt.model),
                          teacher_cache=singles + [out]))
    other_seed = str(tmp_path / 'seed1')
    CacheBuilder(_cfg(ckpt2), other_seed, views=2, seed=1).run()
    with pytest.raises(ConfigError, match='other views: seed'):
        _cached_set(mt, [singles[0], other_seed])


def test_views_all_training_steps_equal_the_live_run(cache):
    """Same seed, same sampler order: the cached set draws the live
    pipeline's views (exactly) and three SGD steps from the stored logits
    follow the live teacher's (fp16 tolerance)."""
    from mmpretrain.registry import DATASETS
    cfg, _, out = cache
    live, cached = _models(cfg, out)
    # the live teacher's logits rounded as the cache stores them (fp16): a
    # perturbation of 1e-4 grows ~1000x per step through this random-init
    # student's batch norms, which would hide what is compared here
    fc = live.teacher.head.fc
    fc.forward = lambda x, f=fc.forward: f(x).half().float()
    live_ds = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    ds = _cached_set(cfg, out)
    order = np.random.RandomState(0).permutation(60)
    opts = [torch.optim.SGD(m.student.parameters(), lr=0.1)
            for m in (live, cached)]
    for step in range(3):
        idx = order[step * 16:(step + 1) * 16]
        np.random.seed(100 + step)
        b_live = pseudo_collate([live_ds[i] for i in idx])
        np.random.seed(100 + step)
        b_cached = pseudo_collate([ds[i] for i in idx])
        for x, y in zip(b_live['inputs'], b_cached['inputs']):
            assert torch.equal(x, y)  # exactly the live views
        for model, batch, opt in zip((live, cached), (b_live, b_cached),
                                     opts):
            data = model.data_preprocessor(batch, True)
            opt.zero_grad()
            sum(model.loss(data['inputs'], data['data_samples']).values()
                ).backward()
            opt.step()
    for a, b in zip(live.student.parameters(), cached.student.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_cached_run_starts_from_the_live_runs_student(cache):
    """Same seed, same student: a frozen teacher is built on a forked random
    state, so its absence (a cache) changes neither the student's initial
    weights nor the random draws that follow."""
    from mmrazor.registry import MODELS
    cfg, _, out = cache
    states = []
    for extra in ({}, dict(teacher_cache=out)):
        torch.manual_seed(5)
        model = MODELS.build(dict(copy.deepcopy(cfg.model), **extra))
        model.init_weights()
        states.append((model.student.state_dict(), torch.rand(3)))
    (a, ra), (b, rb) = states
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(ra, rb)


def test_views_n_samples_stored_views_and_their_logits(cache, tmp_path):
    cfg, _, _ = cache
    out = str(tmp_path / 'n3')
    CacheBuilder(cfg, out, views=3, topk=4, seed=7).run()
    index = read_index(out)
    assert index['views_per_sample'] == 3 and index['topk'] == 4
    shard = open_shard(out, index, 0, 'r')
    # image 5's views: the pipeline's own draws under its seed
    ds = _cached_set(cfg, out)
    np.random.seed(sample_seed(7, 5))
    for v in range(3):
        vp = ViewParams('record')
        ds.dataset.pipeline(dict(ds.dataset.get_data_info(5),
                                 **{VIEW_KEY: vp}))
        assert list(shard['params'][5, v]) == vp.params
    item = ds[5]
    logits = item['data_samples'].kd_teacher_logits
    assert logits.shape == (1, 10)  # K teachers, C classes
    assert abs(float(logits.exp().sum()) - 1) < 1e-3  # top-4 + the rest


# ----------------------------------------------------------- refusals
def _build_model(cfg, **model):
    from mmrazor.registry import MODELS
    return MODELS.build(dict(copy.deepcopy(cfg.model), **model))


def test_a_cache_of_another_teacher_or_checkpoint_is_refused(cache,
                                                             tmp_path):
    cfg, ckpt, out = cache
    other = copy.deepcopy(cfg.model.teacher)
    other.backbone.base_channels = 8
    with pytest.raises(ConfigError, match=r'another model as the teacher: '
                       r'its backbone.base_channels'):
        _build_model(cfg, teacher_cache=out, teacher=other)
    sd = torch.load(ckpt, weights_only=True)
    k = next(iter(sd['state_dict']))
    sd['state_dict'][k] = sd['state_dict'][k] + 1
    changed = str(tmp_path / 'teacher.pth')
    torch.save(sd, changed)
    with pytest.raises(ConfigError, match='another checkpoint of the '
                       'teacher: sha256'):
        _build_model(cfg, teacher_cache=out, teacher_ckpt=changed)
    with pytest.raises(ConfigError, match='teacher_dtype='):
        _build_model(cfg, teacher_cache=out, teacher_dtype='bf16')


def test_a_cache_of_other_classes_pipeline_or_length_is_refused(cache):
    cfg, _, out = cache
    student = copy.deepcopy(cfg.model.architecture)
    student.head.num_classes = 11
    with pytest.raises(ConfigError, match='logits of 10 classes but the '
                       'student'):
        _build_model(cfg, teacher_cache=out, architecture=student)
    from mmpretrain.registry import DATASETS
    ds = copy.deepcopy(cfg.train_dataloader.dataset)
    ds.pipeline[0].padding = 3
    with pytest.raises(ConfigError, match='built for the train pipeline'):
        DATASETS.build(dict(type='KDCachedViews', cache=out, dataset=ds))
    ds = dict(copy.deepcopy(cfg.train_dataloader.dataset), num_per_class=5)
    with pytest.raises(ConfigError, match='a data set of length 60, this '
                       'run has 50'):
        DATASETS.build(dict(type='KDCachedViews', cache=out, dataset=ds))


def test_feature_methods_and_incomplete_caches_are_refused(cache,
                                                           tmp_path):
    cfg, _, out = cache
    feat = copy.deepcopy(cfg.model.distiller)
    feat.teacher_recorders = dict(fc=dict(type='ModuleOutputs',
                                          source='backbone.layer4'))
    with pytest.raises(ConfigError, match='IE-KD, the KD layer'):
        _build_model(cfg, teacher_cache=out, distiller=feat)
    cfg2 = copy.deepcopy(cfg)
    cfg2.model.distiller = feat
    with pytest.raises(ConfigError, match=r"records \[\(1, 128, 4, 4\)\]"):
        CacheBuilder(cfg2, str(tmp_path / 'feat'), views=1)
    cfg3 = copy.deepcopy(cfg)
    cfg3.model.type = 'ATSC'
    with pytest.raises(ConfigError, match='ATSC trains its teacher'):
        CacheBuilder(cfg3, str(tmp_path / 'atsc'), views=1)
    # an interrupted build (status 'building') is refused by training
    part = str(tmp_path / 'part')
    os.makedirs(part)
    index = dict(read_index(out), status='building')
    write_index(part, index)
    with pytest.raises(ConfigError, match='not complete'):
        _build_model(cfg, teacher_cache=part)
    with pytest.raises(KDPluginsError, match='no index.json'):
        _build_model(cfg, teacher_cache=str(tmp_path))
    # a build into a cache of another build is refused, not overwritten
    with pytest.raises(ConfigError, match='another build'):
        CacheBuilder(cfg, out, views=5).run()


def test_a_batch_without_cached_logits_is_refused(cache):
    cfg, _, out = cache
    from mmpretrain.registry import DATASETS
    model = _build_model(cfg, teacher_cache=out)
    ds = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    with pytest.raises(ConfigError, match='not wrapped in KDCachedViews'):
        model.loss(data['inputs'], data['data_samples'])


# ------------------------------------------------- processes, kill/resume
def _arrays(out):
    """Per image (in index order): its views' params and logits."""
    index = read_index(out)
    w = index['world_size']
    shards = [open_shard(out, index, r, 'r') for r in range(w)]
    return [(shards[i % w]['params'][i // w], shards[i % w]['logits0'][i // w])
            for i in range(index['length'])]


def test_cache_build_resumes_after_sigkill_and_two_processes_agree(
        cache, tmp_path):
    cfg, ckpt, out = cache
    args = ['tools/cache_teacher.py', CFG, str(tmp_path / 'c'), '--views',
            'all', '--batch-size', '100', '--cfg-options',
            f'model.teacher_ckpt={ckpt}',
            f'train_dataloader.dataset.num_per_class={N_PER_CLASS}']
    killed = run_tool(args, check=False, env=dict(KD_CACHE_KILL_AFTER='12'))
    assert killed.returncode == -9, killed.stdout + killed.stderr
    index = read_index(str(tmp_path / 'c'))
    done = open_shard(str(tmp_path / 'c'), index, 0, 'r')['done']
    assert index['status'] == 'building' and 0 < done.sum() < 60
    again = run_tool(args + ['--workers', '2'])  # views do not depend on it
    assert 'resuming' in again.stdout + again.stderr
    assert read_index(str(tmp_path / 'c'))['status'] == 'complete'
    for (p1, z1), (p2, z2) in zip(_arrays(out), _arrays(str(tmp_path / 'c'))):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(z1, z2)
    # two processes (torchrun): one shard each, the same views and logits
    from tests.test_distributed import _env, _free_port, _run
    two = str(tmp_path / 'two')
    _run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
          '2', '--master_port', _free_port(), *args[:2], two, *args[3:],
          '--launcher', 'pytorch'], _env())
    assert read_index(two)['world_size'] == 2
    assert sorted(f for f in os.listdir(two) if f.startswith('logits')) == [
        'logits_t0_r0.npy', 'logits_t0_r1.npy']
    for (p1, z1), (p2, z2) in zip(_arrays(out), _arrays(two)):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(z1, z2)


def test_slurm_build_two_tasks_writes_a_shard_each(cache, tmp_path):
    """srun -n 2 tools/cache_teacher.py --launcher slurm: each task writes
    its own shard (ranks from SLURM_PROCID / SLURM_NTASKS), and the arrays
    are the one-process cache's."""
    from tests.test_distributed import _env, _need_slurm, _run
    _need_slurm()
    _, ckpt, out = cache
    two = str(tmp_path / 'slurm')
    partition = os.environ.get('KD_SLURM_PARTITION', 'debug')
    _run(['srun', '-p', partition, '-N1', '-n2', '--cpus-per-task=1',
          sys.executable, 'tools/cache_teacher.py', CFG, two, '--views', 'all',
          '--batch-size', '100', '--launcher', 'slurm', '--cfg-options',
          f'model.teacher_ckpt={ckpt}',
          f'train_dataloader.dataset.num_per_class={N_PER_CLASS}'], _env())
    index = read_index(two)
    assert (index['world_size'], index['status']) == (2, 'complete')
    for (p1, z1), (p2, z2) in zip(_arrays(out), _arrays(two)):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(z1, z2)


def test_train_py_trains_another_logit_method_from_the_cache(cache,
                                                             tmp_path):
    """tools/train.py wraps the train set in KDCachedViews; AEKT reads the
    KD config's cache (same teacher, data and pipeline), with no teacher
    checkpoint on disk."""
    cfg, ckpt, out = cache
    proc = run_tool([
        'tools/train.py', 'configs/demo/aekt_digits.py', '--work-dir',
        str(tmp_path / 'wd'), '--cfg-options', f'model.teacher_ckpt={ckpt}',
        f'model.teacher_cache={out}', 'train_cfg.max_epochs=2',
        f'train_dataloader.dataset.num_per_class={N_PER_CLASS}',
        'train_dataloader.batch_size=16', 'default_hooks.logger.interval=2'])
    log = proc.stdout + proc.stderr
    assert 'distill.loss_aekt' in log
    sd = torch.load(str(tmp_path / 'wd' / 'epoch_2.pth'),
                    weights_only=True)['state_dict']
    assert not any(k.startswith('teacher.') and 'num_batches' not in k
                   for k in sd)  # no teacher weights


def test_cached_training_resumes_bit_exact_after_sigkill(cache, tmp_path):
    """Killed (SIGKILL) mid-epoch 3 and resumed: the uninterrupted cached
    run's weights, bit for bit."""
    from tests.conftest import MID_EPOCH_3, assert_killed_after
    cfg, ckpt, out = cache

    def train(wd, *extra, kill_at=None):
        return run_tool([
            'tools/train.py', CFG, '--work-dir', wd, *extra, '--cfg-options',
            f'model.teacher_ckpt={ckpt}', f'model.teacher_cache={out}',
            'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
            f'train_dataloader.dataset.num_per_class={N_PER_CLASS}',
            'train_dataloader.batch_size=16',
            'default_hooks.logger.interval=1'], kill_at=kill_at)
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    train(full)
    train(part, kill_at=MID_EPOCH_3)
    assert_killed_after(part, epoch=2)
    train(part, '--resume')
    a = torch.load(osp.join(full, 'epoch_3.pth'), weights_only=True)
    b = torch.load(osp.join(part, 'epoch_3.pth'), weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k


def test_two_processes_train_from_a_cache_as_one(cache, tmp_path):
    """DDP: each rank's samples carry their own stored logits, so 2
    processes x 16 train from the cache as 1 process x 32 with the live
    teacher (fp16 logits: a tolerance) and as 1 x 32 from the cache (the
    deterministic set-up of tests/test_distributed.py: no augmentation,
    frozen BN); on both ranks every batch's stored logits are checked
    against the live teacher's on its images (tests/dist_helpers.py)."""
    from tests.test_distributed import (GLOBAL_BATCH, STEPS,
                                        _assert_replicas_checked, _assert_same,
                                        _config, _one_and_two_processes)
    _, ckpt, _ = cache
    cfg = _config(tmp_path, 'configs/demo/kd_digits.py', '', 'kd')
    check = "custom_hooks.append(dict(type='CachedLogitsCheckHook'))\n"
    cfg_check = tmp_path / 'kd_check.py'
    cfg_check.write_text(open(cfg).read() + check)
    out = str(tmp_path / 'cache')
    run_tool(['tools/cache_teacher.py', cfg, out, '--views', 'all',
              '--cfg-options', f'model.teacher_ckpt={ckpt}'])
    index = read_index(out)
    assert (index['length'], index['views_per_sample']) == (
        STEPS * GLOBAL_BATCH, 1)
    a, b, log = _one_and_two_processes(str(cfg_check), tmp_path, [
        f'model.teacher_ckpt={ckpt}', f'model.teacher_cache={out}'])
    _assert_replicas_checked(log, STEPS)
    assert 'GPU number: 2' in log
    for rank in (0, 1):  # each rank's samples carried their own logits
        assert (f'CachedLogitsCheckHook: rank {rank}: '
                f'{STEPS * GLOBAL_BATCH // 2} samples match') in log, log
    _assert_same(a, b)
    assert not any(k.startswith('teacher.') for k in b)
    live = str(tmp_path / 'live')
    run_tool(['tools/train.py', cfg, '--work-dir', live, '--cfg-options',
              f'train_dataloader.batch_size={GLOBAL_BATCH}',
              f'model.teacher_ckpt={ckpt}'], env={'OMP_NUM_THREADS': '1'})
    c = torch.load(osp.join(live, 'epoch_1.pth'),
                   weights_only=True)['state_dict']
    # the cache stores fp16 logits (relative error up to u16 = 2**-11 each);
    # the updates they drive move by that order, relative to each tensor
    from tests.tolerance import UNIT_ROUNDOFF
    _assert_same({k: v for k, v in c.items() if not k.startswith('teacher.')},
                 b, tol=2 * UNIT_ROUNDOFF[torch.float16])


def test_benchmark_times_the_cached_model_beside_the_live_ones(cache,
                                                               tmp_path):
    """tools/benchmark.py with model.teacher_cache (--cfg-options): a
    '(cache)' row (no teacher parameters) beside student and the live rows,
    its 1.10x target, and the cache's costs in meta.cache."""
    import json

    from tests.test_fast_path import assert_rows_consistent
    _, ckpt, out = cache
    js = str(tmp_path / 'bench.json')
    proc = run_tool(['tools/benchmark.py', CFG, '--device', 'cpu', '--batch',
                     '4', '--iters', '1', '--warmup', '1', '--json', js,
                     '--cfg-options', f'model.teacher_ckpt={ckpt}',
                     f'model.teacher_cache={out}'],
                    env={'OMP_NUM_THREADS': '1'})
    assert '| FastDistill (cache) |' in proc.stdout
    with open(js) as f:
        res = json.load(f)
    by = {r['name']: r for r in res['rows']}
    assert list(by) == ['student', 'mmrazor-kd', 'FastDistill',
                        'FastDistill (cache)']
    assert by['FastDistill (cache)']['params_m'] == by['student']['params_m']
    assert by['FastDistill']['params_m'] > by['student']['params_m']
    assert_rows_consistent(res['rows'], batch=4)
    meta = res['meta']['cache']
    assert (meta['images'], meta['views_per_image'], meta['views']) == (
        60, 25, 'all')
    assert meta['bytes_per_view'] == 4 * read_index(out)['params'] + 2 * 10
    assert meta['read_us_per_image'] > 0
    assert meta['teacher_forward_ms_per_view'] > 0
    assert {'row': 'FastDistill (cache)', 'target': 'step <= 1.10x student'
            } in [dict(row=t['row'], target=t['target'])
                  for t in res['targets']]


def test_a_synthetic_cache_times_but_never_trains(tmp_path):
    """tools/benchmark.py --synthetic-cache: random logits for the config's
    teacher, no data; the cached model builds on it, KDCachedViews refuses
    it (nothing trains from random logits)."""
    from mmrazor.registry import MODELS

    from kd_plugins.cache_teacher import synthetic_cache
    cfg = _cfg(str(tmp_path / 'absent.pth'))  # no checkpoint is read
    out = synthetic_cache(cfg, str(tmp_path / 'syn'), images=8)
    index = read_index(out)
    assert index['synthetic'] and index['length'] == 8
    model = MODELS.build(dict(copy.deepcopy(cfg.model), teacher_cache=out))
    assert not list(model.teacher.parameters())
    with pytest.raises(ConfigError, match='synthetic cache'):
        _cached_set(cfg, out)
