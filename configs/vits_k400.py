"""ViC-MAE ViT-S/16 on Kinetics-400: the released recipe (docs/configs.md) at the small size.

A cheaper sibling of vitl_k400.py for ablations: same data and hyper-parameters (mask 0.5, batch
4096 pairs, blr 1.5e-4, AdamW (0.9, 0.95), wd 0.05, 800 epochs with 40 warm-up, temperature 0.1,
loss 0.97 / 0.03) with the MAE ViT-S/16 encoder and its 256 x 8 decoder. No paper number exists
for this size.

  python -m vicmae_jax.main --config=configs/vits_k400.py --workdir=/ckpt/vits_k400
  python -m vicmae_jax.main --config=configs/vits_k400.py:frames,data_root=/data --workdir=...
  python -m vicmae_jax.main --config=configs/vits_k400.py:tiny --workdir=/tmp/vits_k400_tiny

Arguments (configs/sources.py): tiny, data_root=, frames, variant=.
"""
import ml_collections

from configs import common, sources


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = sources.parse_args(arg, variant="S/16")
  c = common.base_config()
  c.model.variant = args.variant
  return sources.finish(c, args, [sources.kinetics(args.data_root, 400, args.frames)])
