"""Places-365 fine-tuning of ViT-L/16 (the paper reports B 58.6-59.1, L 59.5-60.7 top-1).

The ViC-MAE release has no Places-365 recipe, so this is the released IN-1k recipe
(docs/evaluation.md: 100 epochs, batch 1024, blr 5e-4, layer decay 0.65, drop path 0.1,
RandAugment m9 n2, mixup 0.8 / cutmix 1.0, smoothing 0.1, random erasing 0.25, cls readout) on TFDS
`places365_small` (256 px images; 1.8M train, 36,500 validation, evaluated exactly once); only
the data and the 365-way head differ. Places is 1.4x ImageNet per epoch; `--config.num_epochs`
shortens it.

  python -m vicmae_jax.main --config=configs/finetune_places365_vitl.py:init=workdir,path=DIR \
      --workdir=/tmp/ft_places --config.data.data_dir=gs://BUCKET/tfds
  # variant=B/16 for the base model; data=DIR: folders DIR/{train,val}/<class>/<image>
  python -m vicmae_jax.main --config=configs/finetune_places365_vitl.py:tiny --workdir=/tmp/t
"""
from configs import finetune_in1k_vitb


def get_config(arg=None):
  arg = ",".join(a for a in ("variant=L/16", "tfds=places365_small", arg or "") if a)
  c = finetune_in1k_vitb.get_config(arg)
  # A 365-way head for TFDS; folder and toy data (data=DIR, tiny) count their own classes.
  if c.data.kind == "tfds":
    c.num_classes = 365
  return c
