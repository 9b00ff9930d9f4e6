"""Fine-tuning and evaluation as sturdy as pretraining, on real files: corrupt, truncated and
missing videos and images are replaced and counted in training and left out and listed in
evaluation; a non-finite update is skipped; progress lines carry rates and an ETA."""
import dataclasses
import functools
import json
import logging
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import eval_common
from vicmae_jax import run_lib, sharding
from vicmae_jax.data import badinput, index as index_lib, synthetic
from vicmae_jax.evaluation import augment, classifiers, finetune, finetune_step, progress
from vicmae_jax.evaluation import video_data
from vicmae_jax.evaluation import data as data_lib
from vicmae_jax.evaluation.config import eval_config


def _garbled(payload: bytes, seed: int = 0) -> bytes:
  """An eighth of the file replaced by noise, a tenth in: the container opens, the h264 payload
  does not decode ("Error splitting the input into NAL units"), not even by a whole decode."""
  b = bytearray(payload)
  start = len(b) // 10
  b[start:start + len(b) // 8] = np.random.default_rng(seed).bytes(len(b) // 8)
  return bytes(b)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """Three good H.264 clips, one with a garbled payload, one cut in half (no moov atom), one
  listed but deleted: (paths, labels)."""
  root = tmp_path_factory.mktemp("videos")
  good = [str(root / f"good{i}.mp4") for i in range(3)]
  for path in good:
    synthetic.write_video(path, num_frames=30, fps=30)
  synthetic.write_video(str(root / "big.mp4"), num_frames=120, fps=30, width=128, height=96)
  payload = (root / "big.mp4").read_bytes()
  (root / "garbled.mp4").write_bytes(_garbled(payload))
  (root / "cut.mp4").write_bytes(payload[:len(payload) // 2])
  paths = good + [str(root / n) for n in ("garbled.mp4", "cut.mp4", "gone.mp4")]
  return paths, [0, 1, 0, 1, 0, 1]


def _video_source(videos):
  paths, labels = videos
  return video_data.VideoFileSource(index_lib.Index(tuple(paths), tuple(labels)))


def _clip_fn(src):
  return functools.partial(video_data.load_train_clips, source=src, repeats=1, num_frames=4,
                           stride=2, size=16)


def test_corrupt_videos_in_the_training_split_are_replaced_counted_and_logged(videos, caplog):
  src = _video_source(videos)
  it = data_lib.TrainIterator(src, 8, seed=0, sample_fn=_clip_fn(src), max_fraction=1.0,
                              example_shape=(4, 16, 16, 3))
  with caplog.at_level(logging.WARNING):
    batches = [next(it) for _ in range(3)]   # 24 draws over 6 videos: every file visited
  for b in batches:
    assert b["image"].shape == (8, 4, 16, 16, 3) and np.isfinite(b["image"]).all()
    assert set(np.asarray(b["label"]).tolist()) <= {0, 1}   # replaced, not placeholders
  m = it.metrics()
  assert m["data/bad_missing"] >= 1 and m["data/bad_unreadable"] >= 1, m
  assert m["data/bad_truncated"] >= 1, m   # the garbled payload: a decode error
  assert m["data/bad_exhausted"] == 0 and m["data/loaded"] == 24
  why = {pathlib.Path(p).name: c for p, c in it.bad_files.items()}
  assert set(why) == {"garbled.mp4", "cut.mp4", "gone.mp4"}, why
  assert why["gone.mp4"] == "missing" and why["cut.mp4"].startswith("unreadable: ")
  assert why["garbled.mp4"].startswith("truncated: decode error")
  assert "bad input (truncated: decode error" in caplog.text and "garbled.mp4" in caplog.text
  # The counters travel with the step in the checkpointed state.
  resumed = data_lib.TrainIterator(src, 8, seed=0, sample_fn=_clip_fn(src), max_fraction=1.0)
  resumed.set_state(it.get_state())
  assert resumed.step == 3 and resumed.metrics() == m


def test_too_many_bad_training_videos_stop_as_pretraining_does(videos):
  src = _video_source(videos)
  it = data_lib.TrainIterator(src, 8, seed=0, sample_fn=_clip_fn(src), max_fraction=0.05,
                              min_examples=8, example_shape=(4, 16, 16, 3))
  with pytest.raises(badinput.TooManyBadInputs,
                     match=r"data\.bad_input_max_fraction[\s\S]*(garbled|cut|gone)\.mp4"):
    for _ in range(4):
      next(it)


def test_an_example_whose_every_retry_fails_is_a_no_loss_placeholder(tmp_path):
  for i in range(2):
    (tmp_path / f"{i}.mp4").write_bytes(b"")
  src = video_data.VideoFileSource(index_lib.Index(
      tuple(str(tmp_path / f"{i}.mp4") for i in range(2)), (0, 1)))
  it = data_lib.TrainIterator(src, 2, seed=0, sample_fn=_clip_fn(src), max_fraction=1.0,
                              max_retries=1, example_shape=(4, 16, 16, 3))
  batch = next(it)
  np.testing.assert_array_equal(batch["image"], 0.0)
  np.testing.assert_array_equal(batch["target"], 0.0)   # label -1: a target that adds no loss
  assert it.metrics()["data/bad_exhausted"] == 2 and it.metrics()["data/bad_empty"] == 4
  np.testing.assert_allclose(augment.smooth_one_hot(np.array([-1, 1]), 3, 0.3),
                             [[0, 0, 0], [0.1, 0.8, 0.1]], rtol=1e-6)


def test_corrupt_videos_in_the_test_split_are_listed_per_video(videos, caplog):
  src = _video_source(videos)
  c = eval_config(eval_common.base_config("finetune"))
  c = dataclasses.replace(c, eval_batch_size=8, video=dataclasses.replace(
      c.video, enabled=True, num_frames=4, stride=2, test_spatial=1, test_temporal=2))
  seen = []

  def logits_fn(params, clips):   # a fake model: class 0 always
    seen.append(np.asarray(clips).shape)
    return np.tile([5.0, 0.0], (len(clips), 1))

  with caplog.at_level(logging.INFO):
    out = finetune.evaluate_video(logits_fn, None, src, c, 16, None)
  assert (out["num_videos"], out["num_views"], out["num_unreadable"]) == (3, 6, 3)
  assert out["video_top1"] == pytest.approx(100 * 2 / 3)   # good0, good2 are class 0
  files = {pathlib.Path(u["file"]).name: u["cause"] for u in out["unreadable"]}
  assert files["gone.mp4"] == "missing" and files["cut.mp4"].startswith("unreadable: ")
  assert files["garbled.mp4"].startswith("truncated: decode error")
  assert "readable examples only" in out["metrics_over"]
  assert "video test: unreadable input (missing), left out:" in caplog.text
  assert "video test: 6 videos in" in caplog.text and "3 unreadable, left out" in caplog.text
  json.dumps(out)   # the results file takes it as it is


def _metrics(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _write_images(root, n, corrupt=()):
  rng = np.random.default_rng(0)
  for i in range(n):
    cls = ("red", "blue")[i % 2]
    (root / cls).mkdir(parents=True, exist_ok=True)
    colour = np.array([200, 30, 30] if cls == "red" else [30, 30, 200])
    img = np.clip(colour + rng.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
    fmt = "PNG" if i % 3 else "JPEG"
    path = root / cls / f"{i}.{fmt.lower()}"
    Image.fromarray(img).save(path, fmt)
    if i in corrupt:   # a real image cut short: PIL raises "image file is truncated"
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  (root / "red" / "garbage.jpg").write_bytes(b"\xff\xd8\xff not an image")


def test_finetune_on_corrupt_images_trains_reports_and_logs_progress(tmp_path, caplog,
                                                                     monkeypatch):
  """Corrupt images in both splits: training replaces and counts them, the validation results
  list them with causes and count the readable images only; progress lines carry ETAs."""
  data = tmp_path / "data"
  _write_images(data / "train", 16, corrupt=(0, 1))
  _write_images(data / "val", 10, corrupt=(3, 4))
  c = eval_common.tiny(eval_common.base_config("finetune"), str(data))
  c.total_steps, c.log_every_steps, c.eval_batch_size = 4, 2, 8
  c.data.bad_input_max_fraction = 1.0
  monkeypatch.setattr(progress, "EVERY_S", 0.0)   # a line per batch here, to see one
  with caplog.at_level(logging.INFO):
    out = finetune.finetune(c, str(tmp_path / "run"))
  ev = out["eval"]
  assert ev["num_examples"] == 8 and ev["num_unreadable"] == 3, ev   # 11 val files, 3 bad
  saved = json.loads((tmp_path / "run" / "eval_results.json").read_text())
  files = {pathlib.Path(u["file"]).name: u["cause"] for u in saved["unreadable"]}
  assert set(files) == {"3.jpeg", "4.png", "garbage.jpg"}   # cut JPEG, cut PNG, garbage
  assert all(cause.startswith("corrupt_image: ") for cause in files.values())
  assert "readable examples only" in saved["metrics_over"]
  rows = _metrics(tmp_path / "run")
  train = [r for r in rows if "loss" in r]
  assert train[-1]["data/bad_corrupt_image"] >= 1 and train[-1]["skipped_steps"] == 0
  text = caplog.text
  assert "bad input (corrupt_image: " in text
  assert "step 2/4 (50.0%)" in text and "examples/s" in text and "ETA" in text
  assert "eval val: 8/11 examples" in text and "examples/s, ETA" in text


def test_knn_leaves_corrupt_images_out_and_lists_them(tmp_path):
  from vicmae_jax.evaluation import runners
  data = tmp_path / "data"
  _write_images(data / "train", 8, corrupt=(2,))
  _write_images(data / "val", 6)
  c = eval_common.tiny(eval_common.base_config("knn"), str(data))
  c.eval_batch_size, c.knn.k = 8, 3
  out = runners.knn(c, str(tmp_path / "knn"))
  saved = json.loads((tmp_path / "knn" / "knn_results.json").read_text())
  assert saved["train_num_unreadable"] == 2 and saved["val_num_unreadable"] == 1
  assert {pathlib.Path(u["file"]).name for u in saved["train_unreadable"]} == {"2.png",
                                                                               "garbage.jpg"}
  assert out["cls_knn_num_examples"] == 6   # 7 val files, garbage.jpg left out
  assert "readable examples only" in saved["metrics_over"]


def _tiny_step():
  """The tiny config's jitted fine-tuning step on all 8 devices, its state and a batch."""
  c = eval_config(eval_common.tiny(eval_common.base_config("finetune")))
  mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp)
  built = finetune_step.build_finetune_step(c, mesh, num_classes=4)
  params = nnx.state(classifiers.build_classifier(c, built.model_cfg, 4), nnx.Param)
  state = jax.jit(built.init_state, out_shardings=built.state_shardings)(params)
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
           "target": np.eye(4, dtype=np.float32)[rng.integers(0, 4, 16)],
           "label": rng.integers(0, 4, 16).astype(np.int32)}
  return built, state, batch


def test_a_poisoned_step_is_skipped_and_counted():
  built, state, batch = _tiny_step()
  before = jax.device_get(state.params)
  poisoned = dict(batch, image=batch["image"].copy())
  poisoned["image"][3, 5, 5, 0] = np.nan
  state, m = built.fn(state, poisoned)
  assert int(m["update_skipped"]) == 1 and not np.isfinite(float(m["loss"]))
  assert (int(state.skipped), int(state.consecutive_skipped), int(state.step)) == (1, 1, 1)
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))
  state, m = built.fn(state, batch)   # training goes on from the untouched state
  assert int(m["update_skipped"]) == 0 and np.isfinite(float(m["loss"]))
  assert (int(state.skipped), int(state.consecutive_skipped), int(state.step)) == (1, 0, 2)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                         jax.device_get(state.params))
  assert any(jax.tree.leaves(changed))


def test_a_diverged_finetune_saves_its_last_state_and_stops(tmp_path, caplog):
  c = eval_common.tiny(eval_common.base_config("finetune"))
  c.optim.base_lr = 1e30   # the first update blows the weights up; every later loss is NaN
  c.total_steps, c.log_every_steps, c.max_consecutive_skipped = 20, 1, 3
  with caplog.at_level(logging.INFO), pytest.raises(run_lib.TrainingDiverged,
                                                    match="3 consecutive updates"):
    finetune.finetune(c, str(tmp_path / "run"))
  rows = _metrics(tmp_path / "run")
  assert [r["consecutive_skipped"] for r in rows[-3:]] == [1, 2, 3]
  assert (tmp_path / "run" / "checkpoints" / str(rows[-1]["step"])).exists()
  assert "skipped 3 |" in caplog.text


def test_progress_text_and_cadence(caplog):
  assert progress.progress_text("eval val", 250, 1000, 5.0, "examples") == (
      "eval val: 250/1,000 examples (25.0%) 50.0 examples/s, ETA 0.2 min")
  with caplog.at_level(logging.INFO):
    p = progress.PassProgress("knn", 100, every_s=3600)
    for _ in range(10):
      p.update(10)
    p.finish()
  assert "ETA" not in caplog.text             # no line within the interval: no per-batch spam
  assert "knn: 100 examples in" in caplog.text
