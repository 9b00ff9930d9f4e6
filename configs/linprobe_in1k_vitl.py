"""ImageNet-1k linear probe of ViT-L/16, MAE recipe (none was released; docs/evaluation.md).

Frozen encoder; BatchNorm(affine=False, eps 1e-6) + Linear; LARS (momentum 0.9, trust 1e-3,
wd 0), blr 0.1 -> lr 6.4 at batch 16,384, 50 epochs (L/H; B uses 90), warm-up 10; cls token and
mean-pooled features, both reported. By default (`linprobe.augment=True`, MAE's protocol) every
epoch draws fresh RandomResizedCrop + flip views through the frozen encoder;
`--config.linprobe.augment=False` computes features once (resize + centre crop) and trains the head
on the cache: the fast probe.

  python -m vicmae_jax.main --config=configs/linprobe_in1k_vitl.py:init=workdir,path=DIR \
      --workdir=/tmp/lp_l
  python -m vicmae_jax.main --config=configs/linprobe_in1k_vitl.py:tiny --workdir=/tmp/lp_tiny
"""
from configs import eval_common as config_defaults

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, tiny=False, variant="L/16", init="workdir", path="", data="",
                          readouts="cls,mean", epochs=50, tfds="imagenet2012")
  c = config_defaults.base_config("linprobe")
  c.model.variant = args.variant
  c.init.update(source=args.init, path=args.path)
  c.data.name = args.tfds
  c.linprobe.update(readouts=args.readouts, epochs=args.epochs)
  c.eval_batch_size = 1024   # feature extraction batch
  return config_defaults.apply_data_args(c, args)
