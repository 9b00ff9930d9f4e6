"""Places-365 fine-tuning of ViT-L/16 (SPEC.md 7.1 reports B 58.6-59.1, L 59.5-60.7 top-1).

The ViC-MAE release has no Places-365 recipe (SPEC.md 6.3), so this is the released IN-1k recipe
(SPEC.md 6.2: 100 epochs, batch 1024, blr 5e-4, layer decay 0.65, drop path 0.1, RandAugment m9
n2, mixup 0.8 / cutmix 1.0, smoothing 0.1, random erasing 0.25, cls readout) on TFDS
`places365_small` (256 px images; 1.8M train, 36,500 validation, evaluated exactly once); only
the data and the 365-way head differ. Places is 1.4x ImageNet per epoch; `--config.num_epochs`
shortens it.

  python -m vicmae_jax.main --config=configs/finetune_places365_vitl.py:init=workdir,path=DIR \
      --workdir=/tmp/ft_places --config.data.data_dir=gs://BUCKET/tfds
  # variant=B/16 for the base model; data=DIR: folders DIR/{train,val}/<class>/<image>
  python -m vicmae_jax.main --config=configs/finetune_places365_vitl.py:tiny --workdir=/tmp/t
"""
from configs import eval_common as config_defaults

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, tiny=False, variant="L/16", init="workdir", path="", data="",
                          readout="cls", tfds="places365_small")
  c = config_defaults.base_config("finetune")
  c.model.variant = args.variant
  c.init.update(source=args.init, path=args.path)
  c.head.readout = args.readout
  c.data.update(name=args.tfds, train="train", val="validation")
  c.num_classes = 365
  c = config_defaults.apply_data_args(c, args)
  if args.tiny or args.data:
    c.num_classes = 0   # from the folder / toy data
  return c
