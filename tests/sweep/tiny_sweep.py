"""A sweep of two seconds-long members for tests/sweep (the demo's model at 32 px, 2 steps)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import demo  # noqa: E402
from vicmae_jax.sweep import hyper  # noqa: E402


def get_config(arg=None):
  c = demo.get_config("data=clips,steps=2,batch=8,image_size=32")
  c.checkpoint.every_steps = 2
  c.log_every_steps = 1
  c.image_every_steps = 0
  c.knn_eval.update(every_steps=1, batch_size=8, probe_epochs=2, probe_batch_size=8,
                    data=dict(kind="toy", toy="color", train_size=16, val_size=8, size=32,
                              num_classes=4))
  return c


def get_sweep(arg=None):
  return hyper.product([hyper.sweep("config.loss.weight_contrast", [0.0, 0.03]),
                        hyper.sweep("config.seed", [0] if arg != "two_seeds" else [0, 1])])


def get_sweep_summary(arg=None):
  return dict(metrics=["knn_mean_top1", "probe_mean_top1"], plot_metric="knn_mean_top1",
              title="tiny sweep")
