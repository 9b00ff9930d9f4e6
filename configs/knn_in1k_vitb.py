"""ImageNet-1k weighted kNN of a frozen ViT-B/16 (k = 20, T = 0.07, cls and mean features).

  python -m vicmae_jax.main --config=configs/knn_in1k_vitb.py:init=workdir,path=DIR --workdir=/tmp/knn
  python -m vicmae_jax.main --config=configs/knn_in1k_vitb.py:tiny --workdir=/tmp/knn_tiny
  # the same config extracts features (.npy, optionally ArrayRecord) to WORKDIR/features:
  python -m vicmae_jax.main --config=configs/knn_in1k_vitb.py:tiny --workdir=/tmp/feats \
      --config.mode=extract_features --config.features.array_record=True
"""
from configs import eval_common as config_defaults

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, tiny=False, variant="B/16", init="workdir", path="", data="",
                          k=20, temperature=0.07, tfds="imagenet2012")
  c = config_defaults.base_config("knn")
  c.model.variant = args.variant
  c.init.update(source=args.init, path=args.path)
  c.data.name = args.tfds
  c.knn.update(k=args.k, temperature=args.temperature)
  c.eval_batch_size = 1024
  return config_defaults.apply_data_args(c, args)
