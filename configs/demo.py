"""The embedded default: pretrain a small ViT on data the project makes itself, on CPU.

`data=study` (the default): the base arm of the project's small-scale study (configs/study.py,
docs/study.md) on the study dataset's 'smooth' preset (data/study.py, docs/study_data.md): 1,000
H.264 clips of digit glyphs whose position, scale, colour, background scene, lighting and an
occluder change over time (distant frame pairs: one frame from each half of a clip), and 1,000
still images (two augmented views each), mixed in every batch. On first use the dataset is made
(~90 s, cached under ~/.cache/vicmae_jax per spec, shared with the study) and its clips are
pre-extracted into ArrayRecord frame shards (every frame kept). A ViT with patch 8 at 32 px
(16 tokens) trains 900 steps of 64 pairs in about 2-3 minutes on 2 cores, readouts included (plus
the ~90 s the first time). At steps 300, 600 and
900 the log prints kNN and linear-probe accuracy on the held-out labelled digits, beside the same
readouts of a freshly initialised encoder ("trained vs random encoder").

`data=clips`: the earlier demo, seconds-fast (tests and smoke runs use it): six H.264 clips the
project encodes (moving textures; frame pairs about 24 frames apart) and six photos scikit-image
ships, pre-extracted the same way under WORKDIR/demo_data; its in-loop kNN is a toy colour task
(any encoder solves it).

  python -m vicmae_jax.main --config=configs/demo.py --workdir=/tmp/vicmae_demo
  python -m vicmae_jax.main --config=configs/demo.py:data=clips,steps=50 --workdir=/tmp/vicmae_quick

Arguments (after a colon, comma-separated): steps, batch, image_size, data (study | clips), media
(a folder for the generated data; default: the study's cache folder ~/.cache/vicmae_jax/..., or
WORKDIR/demo_data for clips; set it where the home folder is not writable).
"""
from configs import common

DATA = ("study", "clips")


def get_config(arg=None):
  args = common.parse_arg(arg, steps=0, batch=0, image_size=0, media="", data="study")
  if args.data not in DATA:
    raise ValueError(f"data must be one of {DATA}, got {args.data!r}")
  study = args.data == "study"
  steps = args.steps or (900 if study else 300)
  image_size = args.image_size or (32 if study else 64)
  c = common.base_config()
  c.model.update(variant="test", image_size=image_size, patch=8, width=128, depth=4,
                 heads=4, mlp_dim=512, decoder_width=64, decoder_depth=2, decoder_heads=4,
                 projector_hidden=256, projector_out=64, predictor_hidden=256)
  c.batch_size = args.batch or (64 if study else 16)
  c.total_steps = steps
  c.optim.base_lr = 1.5e-3          # a small model on a tiny dataset likes a larger lr
  c.optim.warmup_epochs = 2.0
  # One worker process prepares batches ahead, with its own interpreter; as a thread of the
  # trainer's process the input kept the step waiting about 40% of its time.
  c.input.num_workers = 1
  c.input.read_threads = 2
  c.input.bad_input_min_examples = 50
  c.log_every_steps = 10
  c.num_image_examples = 6
  if study:
    use_study_data(c, steps, path=args.media)
  else:
    _clips_data(c, image_size, path=args.media)
  return c


def use_study_data(c, steps: int, *, path: str = "", preset: str = "smooth",
                   data_scale: float = 1.0, readouts: int = 3, parts=("videos", "images")):
  """Pretraining on the study dataset's `parts`; `readouts` evenly spaced readouts on its probe
  split (configs/study.py builds every arm on this)."""
  study = dict(kind="study", path=path, data_scale=data_scale, preset=preset)
  c.input.sources = [dict(study, part=p, weight=1.0) for p in parts]
  # Distant frames (the released recipe): 2 s clips of 48 frames, one frame from each half.
  c.input.pair_sampling = dict(mode="distant", gap=0.0, gap_max=48.0, unit="frames")
  c.steps_per_epoch = 25
  # 4x the clips demo's lr (peak 1.5e-3 at batch 64): measured on the base arm against its
  # random-encoder control only (docs/study.md, "Calibration"), before any arm was compared.
  c.optim.base_lr = 6e-3
  c.checkpoint.every_steps = steps // 2
  c.log_every_steps = max(steps // 20, 1)
  c.image_every_steps = steps
  # kNN and the linear probe (SGD: MAE's LARS stays at chance in a few hundred steps) on the
  # held-out split, and once per run the same readouts of a freshly initialised encoder.
  c.knn_eval.update(every_steps=max(steps // readouts, 1), batch_size=100, probe_epochs=100,
                    probe_batch_size=64, probe_base_lr=1.0, probe_optimizer="sgd",
                    random_control=True, data=dict(study))


def _clips_data(c, image_size: int, path: str = ""):
  """The six generated clips and six photos; a toy colour kNN (the tests' fast default)."""
  # Expanded under WORKDIR/demo_data, or under `media=DIR` (shared by several runs).
  c.input.sources = [dict(kind="demo", path=path)]
  c.input.pair_sampling = dict(mode="fixed_gap", gap=24, gap_max=48, unit="frames")
  c.steps_per_epoch = 10
  c.checkpoint.every_steps = 100
  c.image_every_steps = 100
  c.knn_eval.update(every_steps=150, batch_size=16,
                    data=dict(kind="toy", toy="color", train_size=64, val_size=48,
                              size=image_size, num_classes=4))
