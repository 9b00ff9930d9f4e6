"""ViC-MAE ViT-H/14 on Kinetics-400 + ImageNet-1k (natural proportions within every batch).

The released recipe (docs/configs.md) scaled to ViT-H/14 with MAE's 512 x 8 decoder: mask 0.5, batch
4096, blr 1.5e-4, AdamW (0.9, 0.95), wd 0.05, 800 epochs with 40 warm-up, temperature 0.1, loss
0.97 / 0.03. The paper trains no H model, so there is no number to match. 224 px with patch 14
gives a 16 x 16 grid, 128 visible tokens per view.

  python -m vicmae_jax.main --config=configs/vith_k400_in1k.py --workdir=gs://bucket/vith
  python -m vicmae_jax.main --config=configs/vith_k400_in1k.py:frames,imagenet=tfds --workdir=...
  python -m vicmae_jax.main --config=configs/vith_k400_in1k.py:tiny --workdir=/tmp/vith_tiny

Arguments (configs/sources.py): tiny, data_root=, frames, variant=, imagenet=folder|tfds,
imagenet_folder=, tfds_data_dir=.
"""
import ml_collections

from configs import common, sources


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = sources.parse_args(arg, variant="H/14", **sources.imagenet_args())
  c = common.base_config()
  c.model.variant = args.variant
  # 32 blocks of width 1280: without rematerialisation the activations of a 4096-pair batch do
  # not fit in accelerator memory at any realistic device count. Numerics are unchanged.
  c.model.remat = True
  return sources.finish(c, args, [sources.kinetics(args.data_root, 400, args.frames),
                                  sources.imagenet(args.data_root, args)])
