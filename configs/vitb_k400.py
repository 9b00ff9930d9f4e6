"""ViC-MAE ViT-B/16 on Kinetics-400: the released recipe (docs/configs.md).

Mask 0.5, batch 4096 pairs, blr 1.5e-4 (lr = blr * batch / 256), AdamW (0.9, 0.95), wd 0.05,
800 epochs with 40 warm-up, temperature 0.1, loss 0.97 recon + 0.03 contrastive; two frames per
video (`distant` pairs). The paper reports no ViT-B row for K400 alone.

  python -m vicmae_jax.main --config=configs/vitb_k400.py --workdir=/ckpt/vitb_k400
  python -m vicmae_jax.main --config=configs/vitb_k400.py:frames,data_root=/data --workdir=...
  python -m vicmae_jax.main --config=configs/vitb_k400.py:tiny --workdir=/tmp/vitb_k400_tiny

Arguments (configs/sources.py): tiny, data_root=, frames, variant=.
"""
import ml_collections

from configs import common, sources


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = sources.parse_args(arg, variant="B/16")
  c = common.base_config()
  c.model.variant = args.variant
  return sources.finish(c, args, [sources.kinetics(args.data_root, 400, args.frames)])
