"""Something-Something-v2 fine-tuning of ViT-L/16 (SPEC.md 6.3; recipe not released).

As configs/finetune_k400_vitl.py but with segment-based sampling (16 segments, one frame each:
random in training, the middle at test), no horizontal flip (SSv2 labels such as "left to right"
flip with the image), and MAE-ST's SSv2 test protocol of 3 spatial x 2 temporal views (with
segment sampling the temporal views coincide; 2 are kept for parity of the view count).

  python -m vicmae_jax.main --config=configs/finetune_ssv2_vitl.py:init=workdir,path=DIR,\
csv=/data/ssv2/train.json,val_csv=/data/ssv2/validation.json,root=/data/ssv2/videos,\
labels=/data/ssv2/labels.json --workdir=/tmp/ssv2
"""
from configs import common
from configs import finetune_k400_vitl


def get_config(arg=None):
  args = common.parse_arg(arg, tiny=False, labels="")
  rest = ",".join(i for i in (arg or "").split(",") if i and not i.startswith("labels="))
  c = finetune_k400_vitl.get_config(",".join(x for x in ("kind=ssv2,sampling=segment", rest) if x))
  c.data.labels = args.labels
  c.aug.hflip = False
  if not args.tiny:
    c.video.update(test_spatial=3, test_temporal=2)
  return c
