"""Something-Something-v2 fine-tuning of ViT-L/16 (recipe not released; docs/evaluation.md).

MAE-ST released no SSv2 fine-tuning; this is configs/finetune_k400_vitl.py (MAE-ST optimiser,
head dropout 0.3, 2 repeats, RandomResizedCrop 0.08-1, clip RandAugment m7, erasing 0.25,
mixup / cutmix, smoothing) with these SSv2 choices, all inferred from VideoMAE's SSv2
fine-tuning (`run_class_finetuning.py`, `ssv2.py`, `scripts/ssv2/*/finetune.sh`):
  * segment sampling: 16 equal segments, one frame each (random in training);
  * no horizontal flip: labels such as "pushing something from left to right" flip with the
    image;
  * test 3 spatial x 2 temporal views, the two temporal views taking the start and the middle
    of every segment (VideoMAE's `test_num_segment 2`, `test_num_crop 3`).
VideoMAE's other SSv2 settings (4 RandAugment ops, no head dropout, 30-40 epochs) are not
copied; pass `--config.aug.rand_augment_n=4 --config.video.head_dropout=0` to use them.

  python -m vicmae_jax.main --config=configs/finetune_ssv2_vitl.py:init=workdir,path=DIR,\
csv=/data/ssv2/train.json,val_csv=/data/ssv2/validation.json,root=/data/ssv2/videos,\
labels=/data/ssv2/labels.json --workdir=/tmp/ssv2
"""
from configs import common
from configs import finetune_k400_vitl


def get_config(arg=None):
  args = common.parse_arg(arg, strict=False, tiny=False, labels="")  # the rest: k400's
  rest = ",".join(i for i in (arg or "").split(",") if i and not i.startswith("labels="))
  c = finetune_k400_vitl.get_config(",".join(x for x in ("kind=ssv2,sampling=segment", rest) if x))
  c.data.labels = args.labels
  c.aug.hflip = False
  if not args.tiny:
    c.video.update(test_spatial=3, test_temporal=2)
  return c
