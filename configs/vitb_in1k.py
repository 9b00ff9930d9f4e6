"""ViC-MAE ViT-B/16 on ImageNet-1k images only (two augmented views of each image).

The released recipe (docs/configs.md) without video: mask 0.5, batch 4096, blr 1.5e-4, AdamW
(0.9, 0.95), wd 0.05, 800 epochs with 40 warm-up, temperature 0.1, loss 0.97 / 0.03. The image
baseline for the video configs; the paper has no ViC-MAE row for IN1K alone.

  python -m vicmae_jax.main --config=configs/vitb_in1k.py --workdir=/ckpt/vitb_in1k
  python -m vicmae_jax.main --config=configs/vitb_in1k.py:imagenet=tfds,data_root=/d --workdir=...
  python -m vicmae_jax.main --config=configs/vitb_in1k.py:tiny --workdir=/tmp/vitb_in1k_tiny

Arguments (configs/sources.py): tiny, data_root=, variant=, imagenet=folder|tfds, imagenet_folder=,
tfds_data_dir=. (`frames` is rejected: there are no videos.) The tiny variant uses the bundled
demo media, which includes clips as well as photos.
"""
import ml_collections

from configs import common, sources


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = sources.parse_args(arg, variant="B/16", **sources.imagenet_args())
  if args.frames:
    raise ValueError("vitb_in1k.py trains on images only; `frames` does not apply.")
  c = common.base_config()
  c.model.variant = args.variant
  return sources.finish(c, args, [sources.imagenet(args.data_root, args)])
