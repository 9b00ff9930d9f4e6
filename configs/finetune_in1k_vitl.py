"""ImageNet-1k fine-tuning of ViT-L/16. The released scripts for B and L are identical
(docs/evaluation.md), so this is the B recipe with an L encoder. MAE's own L recipe (50 epochs,
blr 1e-3, layer decay 0.75, drop path 0.2) is one override away:

  python -m vicmae_jax.main --config=configs/finetune_in1k_vitl.py:init=workdir,path=DIR \
      --workdir=/tmp/ft_l --config.num_epochs=50 --config.optim.base_lr=1e-3 \
      --config.optim.layer_decay=0.75 --config.head.drop_path=0.2
"""
from configs import finetune_in1k_vitb


def get_config(arg=None):
  arg = ",".join(a for a in ("variant=L/16", arg or "") if a)
  return finetune_in1k_vitb.get_config(arg)
