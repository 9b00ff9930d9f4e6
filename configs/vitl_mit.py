"""ViC-MAE ViT-L/16 on Moments in Time (v1 training clips, about 802k 3-s videos).

Released recipe (docs/configs.md): mask 0.5, batch 4096 pairs, blr 1.5e-4, AdamW (0.9, 0.95),
wd 0.05, 800 epochs with 40 warm-up, temperature 0.1, loss 0.97 / 0.03. The paper's epoch count for MiT
is not found; 800 is the released script's (override with --config.num_epochs).
Paper, fine-tuned top-1: IN1K 85.3, K400 84.9, Places-365 59.7, SSv2 73.8.

  python -m vicmae_jax.main --config=configs/vitl_mit.py --workdir=/ckpt/vitl_mit
  python -m vicmae_jax.main --config=configs/vitl_mit.py:frames,data_root=/data --workdir=...
  python -m vicmae_jax.main --config=configs/vitl_mit.py:tiny --workdir=/tmp/vitl_mit_tiny

Arguments (configs/sources.py): tiny, data_root=, frames, variant=.
"""
import ml_collections

from configs import common, sources


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = sources.parse_args(arg, variant="L/16")
  c = common.base_config()
  c.model.variant = args.variant
  return sources.finish(c, args, [sources.moments_in_time(args.data_root, args.frames)])
