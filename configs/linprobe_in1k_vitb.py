"""ImageNet-1k linear probe of ViT-B/16 (the paper's probe model; MAE recipe: 90 epochs)."""
from configs import linprobe_in1k_vitl


def get_config(arg=None):
  arg = ",".join(a for a in ("variant=B/16,epochs=90", arg or "") if a)
  return linprobe_in1k_vitl.get_config(arg)
