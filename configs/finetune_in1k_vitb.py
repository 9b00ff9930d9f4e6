"""ImageNet-1k fine-tuning of ViT-B/16, the released recipe (docs/evaluation.md).

100 epochs, batch 1024, blr 5e-4 (lr 2e-3), warm-up 5, cosine to 1e-6, AdamW (0.9, 0.999),
wd 0.05, layer decay 0.65, drop path 0.1, RandAugment m9 n2 (mstd 0.5), mixup 0.8 / cutmix 1.0
(switch 0.5), label smoothing 0.1, random erasing 0.25, cls readout; eval at 224 after resize to
256 + centre crop (0.875), top-1/top-5 over all 50,000 validation images exactly once.

  python -m vicmae_jax.main --config=configs/finetune_in1k_vitb.py:init=workdir,path=PRETRAIN_DIR \
      --workdir=/tmp/ft_b
  # init=export (params_io directory) or init=pytorch (a .pth / .safetensors file)
  # readout=mean: mean-pooled patch tokens + fc_norm; data=DIR: ImageNet folders DIR/{train,val}
  python -m vicmae_jax.main --config=configs/finetune_in1k_vitb.py:tiny --workdir=/tmp/ft_tiny
"""
from configs import eval_common as config_defaults

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, tiny=False, variant="B/16", init="workdir", path="", data="",
                          readout="cls", tfds="imagenet2012")
  c = config_defaults.base_config("finetune")
  c.model.variant = args.variant
  c.init.update(source=args.init, path=args.path)
  c.head.readout = args.readout
  c.data.name = args.tfds
  return config_defaults.apply_data_args(c, args)
