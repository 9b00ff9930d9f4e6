"""The study dataset as sources ('study' kinds) and configs/study.py's arms and sweeps."""
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from configs import study as study_config  # noqa: E402
from vicmae_jax import config_lib, data  # noqa: E402
from vicmae_jax.data import records, study_sources  # noqa: E402
from vicmae_jax.evaluation import data as eval_data  # noqa: E402
from vicmae_jax.sweep import members  # noqa: E402

SCALE = 0.05  # 2 videos, 2 images, 5 + 3 probe images per class


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp('study') / 'data')


def test_prepare_writes_once_and_keeps_every_frame(root):
  folders = study_sources.prepare(root, SCALE)
  spec = study_sources.spec_for(SCALE)
  summary = (pathlib.Path(folders['videos']) / 'summary.json').read_text()
  assert '"written": 20' in summary and '"bad": {}' in summary
  import grain
  shards = sorted(str(p) for p in pathlib.Path(folders['videos']).glob('*.array_record'))
  header, jpegs = records.decode_record(grain.sources.ArrayRecordDataSource(shards)[0])
  assert len(jpegs) == spec.frames and header['label'] == 0  # every frame kept: exact gaps
  stamp = os.path.getmtime(shards[0])
  assert study_sources.prepare(root, SCALE) == folders  # a second call reuses both
  assert os.path.getmtime(shards[0]) == stamp


def test_sources_and_labelled_splits(root):
  cfg = dict(sources=[dict(kind='study', part=p, path=root, data_scale=SCALE, weight=1.0)
                      for p in ('videos', 'images')],
             image_size=64, read_threads=1,
             pair_sampling=dict(mode='fixed_gap', gap=4, unit='frames'))
  it = data.make_pretrain_iterator(cfg, global_batch_size=8, seed=0, process_index=0,
                                   process_count=1)
  batch = next(it)
  assert batch['view1'].shape == (8, 64, 64, 3) and it.source_names == ['study_videos',
                                                                         'study_images']
  val = eval_data.build_source(dict(kind='study', path=root, data_scale=SCALE), 'val')
  train = eval_data.build_source(dict(kind='study', path=root, data_scale=SCALE), 'train')
  assert (len(train), len(val)) == (50, 30)
  img, label = val.get(len(val) - 1)
  assert img.shape == (64, 64, 3) and label == 9
  with pytest.raises(ValueError, match='part must be one of'):
    study_sources.pretrain_source(dict(kind='study', part='audio', path=root, data_scale=SCALE))
  with pytest.raises(ValueError, match='unknown study data preset'):
    study_sources.spec_for(1.0, 'nope')


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config


def test_every_arm_builds_a_valid_config_that_changes_one_thing(root):
  base = study_config.get_config(f'data={root},data_scale={SCALE}')
  for arm in study_config.ARMS:
    c = study_config.get_config(f'arm={arm},seed=2,data={root},data_scale={SCALE}')
    config_lib.validate(c, device_count=8)
    assert c.seed == 2 and c.total_steps == study_config.STEPS
    assert c.knn_eval.random_control and c.knn_eval.probe_epochs > 0
    keys = ('model.pooling', 'model.contrastive_mode', 'loss.weight_recon',
            'loss.weight_contrast', 'input.pair_sampling.mode', 'input.pair_sampling.gap')
    diff = {k.rsplit('.', 1)[0] if 'pair_sampling' in k else k   # mode and gap: one choice
            for k in keys if _get(c, k) != _get(base, k)}
    parts = [s['part'] for s in c.input.sources]
    assert (len(diff) + (parts != ['videos', 'images'])) == (arm != 'vicmae'), arm
  assert [s['part'] for s in study_config.get_config('arm=images_only').input.sources] == [
      'images']
  assert study_config.get_config('quick,budget=3').total_steps == 3 * study_config.QUICK_STEPS


def test_the_study_sweep_lists_arms_and_seeds():
  full = members.from_dicts(study_config.get_sweep(None))
  assert len(full) == len(study_config.ARMS) * len(study_config.SEEDS)
  quick = members.from_dicts(study_config.get_sweep('quick'))
  assert [m.name for m in quick[:2]] == ['vicmae-s0', 'vicmae-s1']
  assert quick[0].config_arg == 'arm=vicmae,seed=0,quick' and quick[0].group == 'vicmae'
  scaled = members.from_dicts(study_config.get_sweep('budget=10'))
  assert scaled[0].config_arg == 'arm=vicmae,seed=0,budget=10'
