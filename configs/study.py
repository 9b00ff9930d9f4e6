"""A small-scale study of the paper's ablations on the project's study dataset (docs/study.md).

Data: `data/study.py`'s 'smooth' preset (digits 0-9 as glyphs in short H.264 clips whose
position, scale, colour, background scene, lighting and an occluder change over time, plus still
images), made on first use (~90 s, cached per spec) and pre-extracted with every frame kept.
Model: the demo's ViT (patch 8, 4 blocks of width 128) at 32 px (16 tokens). Readouts at four
points of every run: kNN and the project's linear probe on the held-out probe split, cls and mean
features, and once per run the same readouts of a freshly initialised encoder (`random_*`).

  python -m vicmae_jax.sweep --config=configs/study.py --workdir=runs/study          # <= 60 min
  python -m vicmae_jax.sweep --config=configs/study.py:quick --workdir=/tmp/study    # <= 10 min
  python -m vicmae_jax.sweep --config=configs/study.py:budget=20 --workdir=...       # GPU / TPU
  python -m vicmae_jax.main --config=configs/study.py:arm=mae_only,seed=1 --workdir=...

Arguments: arm (one of ARMS), seed, budget (steps x budget, same data and readout points),
quick (fewer arms, seeds and steps), data (dataset folder; default a cache folder per spec),
data_scale (per-class counts x this; tests use small ones), preset (a dataset preset of
data/study.py's PRESETS), image_size (pixels; 64 = the demo's 64 tokens, ~3x the compute).
"""
from configs import common, demo

# Each arm changes one thing of `vicmae` (the released recipe's choices: EMA target, distant
# frames, mean pooling, images and videos mixed); the paper's ablations are read across them.
ARMS = {
    "vicmae": {},
    "mae_only": {"loss.weight_contrast": 0.0},
    "contrastive_only": {"loss.weight_recon": 0.0},
    "shared_projector": {"model.contrastive_mode": "shared_projector"},
    "gap_0": {"input.pair_sampling.mode": "fixed_gap", "input.pair_sampling.gap": 0.0},
    "gap_4": {"input.pair_sampling.mode": "fixed_gap", "input.pair_sampling.gap": 4.0},
    "pool_cls": {"model.pooling": "cls"},
    "pool_max": {"model.pooling": "max"},
    "images_only": {},   # sources changed below
    "videos_only": {},
}
QUICK_ARMS = ("vicmae", "mae_only", "gap_0")
SEEDS, QUICK_SEEDS = (0, 1, 2), (0, 1)
# At 32 px the ViT sees 16 tokens of 8x8 px: ~0.11 s a step on 2 cores, so 30 members of 600
# steps (+ ~25 s of start-up and readouts each) fit in an hour (docs/study.md, "Budget").
STEPS, QUICK_STEPS = 600, 500


def _args(arg):
  return common.parse_arg(arg, arm="vicmae", seed=0, budget=1, quick=False, data="",
                          data_scale=1.0, preset="smooth", image_size=32)


def get_config(arg=None):
  a = _args(arg)
  if a.arm not in ARMS:
    raise ValueError(f"unknown arm {a.arm!r}; arms: {sorted(ARMS)}")
  steps = (QUICK_STEPS if a.quick else STEPS) * a.budget
  c = demo.get_config(f"steps={steps},batch=64,image_size={a.image_size}")
  c.seed = a.seed
  parts = tuple(p for p in ("videos", "images") if not (a.arm == "images_only" and p == "videos")
                and not (a.arm == "videos_only" and p == "images"))
  demo.use_study_data(c, steps, path=a.data, preset=a.preset, data_scale=a.data_scale,
                      readouts=4, parts=parts)
  for key, value in ARMS[a.arm].items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def get_sweep(arg=None):
  a = _args(arg)
  arms = QUICK_ARMS if a.quick else tuple(ARMS)
  keep = ",".join(f"{k}={a[k]}" for k in ("budget", "data", "data_scale", "preset", "image_size")
                  if a[k] != _args(None)[k]) + (",quick" if a.quick else "")
  return [dict(name=f"{arm}-s{seed}", group=arm,
               config_arg=f"arm={arm},seed={seed}" + (f",{keep.lstrip(',')}" if keep else ""))
          for arm in arms for seed in (QUICK_SEEDS if a.quick else SEEDS)]


def get_sweep_summary(arg=None):
  # The plot reads the cls-token probe: on the base arm's calibration runs it is the readout that
  # separates the trained encoder from the random one most (docs/study.md, "Calibration").
  return dict(metrics=["probe_cls_top1", "probe_mean_top1", "knn_cls_top1", "knn_mean_top1",
                       "random_probe_cls_top1", "random_probe_mean_top1"],
              plot_metric="probe_cls_top1",
              title="ViC-MAE ablations on the study dataset (linear probe, cls token)")
