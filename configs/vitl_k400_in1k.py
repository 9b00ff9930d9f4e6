"""ViC-MAE ViT-L/16 on Kinetics-400 + ImageNet-1k: the released script's data (docs/configs.md).

K400 frame pairs and IN1K two-view image pairs mixed within every batch in natural proportions
(about 241k videos : 1.28M images, docs/decisions.md#data-augmentations-and-mixing; the realised
ratio is logged as `data/mix_k400`, `data/mix_in1k`). Recipe: mask 0.5, batch 4096, blr 1.5e-4,
AdamW (0.9, 0.95), wd 0.05, 800 epochs with 40 warm-up, temperature 0.1, loss 0.97 / 0.03.
Paper, fine-tuned top-1 IN1K / K400 / Places-365 / SSv2: L/16 86.0 / 86.8 / 60.0 / 75.0;
with `variant=B/16` 83.0 / 80.8 / 58.6 / 69.5.

  python -m vicmae_jax.main --config=configs/vitl_k400_in1k.py --workdir=/ckpt/vitl_k400_in1k
  python -m vicmae_jax.main --config=configs/vitl_k400_in1k.py:frames,imagenet=tfds --workdir=...
  python -m vicmae_jax.main --config=configs/vitl_k400_in1k.py:tiny --workdir=/tmp/k400_in1k_tiny

Arguments (configs/sources.py): tiny, data_root=, frames, variant=, imagenet=folder|tfds,
imagenet_folder=, tfds_data_dir=.
"""
import ml_collections

from configs import common, sources


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = sources.parse_args(arg, variant="L/16", **sources.imagenet_args())
  c = common.base_config()
  c.model.variant = args.variant
  return sources.finish(c, args, [sources.kinetics(args.data_root, 400, args.frames),
                                  sources.imagenet(args.data_root, args)])
