"""evaluation/data.py: labelled sources on the shared index readers, and the Grain train input."""
import functools
import json

import numpy as np
import pytest
from PIL import Image

from vicmae_jax.data import index as index_lib
from vicmae_jax.evaluation import augment
from vicmae_jax.evaluation import data as data_lib


def _write_images(root, classes, per_class, fmt="PNG"):
  rng = np.random.default_rng(0)
  for c in classes:
    (root / c).mkdir(parents=True)
    for i in range(per_class):
      img = Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), np.uint8))
      img.save(root / c / f"{i}.{'png' if fmt == 'PNG' else 'jpg'}", fmt)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("imgs")
  _write_images(root / "train", ["ant", "bee", "cat"], 5)
  _write_images(root / "val", ["bee", "cat"], 2, fmt="JPEG")   # a class missing from val
  return root


def test_folder_splits_share_the_training_classes(folders):
  spec = dict(kind="image_folder", train=str(folders / "train"), val=str(folders / "val"))
  train, val = data_lib.build_source(spec, "train"), data_lib.build_source(spec, "val")
  assert (len(train), len(val), train.num_classes, val.num_classes) == (15, 4, 3, 3)
  img, label = val.get(0)
  assert img.dtype == np.uint8 and img.shape[-1] == 3
  assert sorted({val.get(i)[1] for i in range(len(val))}) == [1, 2]   # bee, cat keep 1, 2


def test_csv_split_and_unlabelled_folder(folders, tmp_path):
  files = sorted((folders / "train").rglob("*.png"))
  csv = tmp_path / "train.csv"
  csv.write_text("".join(f"{p},{p.parent.name}\n" for p in files))
  src = data_lib.build_source(dict(kind="image_csv", train=str(csv), val=str(csv),
                                   root=str(folders)), "val")
  assert len(src) == 15 and src.num_classes == 3
  flat = tmp_path / "flat"
  flat.mkdir()
  Image.new("RGB", (8, 8)).save(flat / "a.png")
  with pytest.raises(index_lib.IndexFormatError, match="unlabelled images"):
    data_lib.build_source(dict(kind="image_folder", train=str(flat), val=str(flat)), "train")


def _iterator(source, **kw):
  transform = functools.partial(augment.train_transform, size=16, rand_augment_n=1, reprob=0.25,
                                scale=(0.3, 1.0))
  return data_lib.TrainIterator(source, 6, seed=3, transform=transform, **kw)


def _take(it, n):
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def test_batches_do_not_depend_on_threads_or_workers(folders):
  src = data_lib.build_source(dict(kind="image_folder", train=str(folders / "train"),
                                   val=str(folders / "val")), "train")
  ref = _take(_iterator(src), 4)   # 24 examples: an epoch boundary inside batch 2
  for kw in (dict(threads=4), dict(workers=2)):
    got = _take(_iterator(src, **kw), 4)
    for a, b in zip(ref, got):
      for key in ("image", "target", "label"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=str(kw))
  assert ref[0]["image"].shape == (6, 16, 16, 3)
  # Every example once per epoch (15 examples: batches 0-1 and half of 2).
  it = _iterator(src)
  seen = np.concatenate([it.indices(s) for s in range(5)])[:30]
  assert sorted(seen[:15]) == list(range(15)) and sorted(seen[15:]) == list(range(15))


def test_resume_with_other_workers_replays_the_run(folders):
  src = data_lib.build_source(dict(kind="image_folder", train=str(folders / "train"),
                                   val=str(folders / "val")), "train")
  ref = _take(_iterator(src), 5)
  it = _iterator(src, workers=2)
  _take(it, 2)
  state = it.get_state()
  saved = json.loads(state)
  assert (saved["step"], saved["seed"]) == (2, 3)
  assert saved["bad_input"]["examples"] == 12 and not saved["bad_input"]["bad_files"]
  resumed = _iterator(src, threads=2)   # fewer workers, other threads: same stream
  resumed.set_state(state)
  for a, b in zip(ref[2:], _take(resumed, 3)):
    np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
