"""The embedded default: pretrain a small ViT on media that needs no download, on CPU.

Data: six H.264 clips the project encodes itself (moving textures; frame pairs about 24 frames, a
second, apart) and six photos scikit-image ships (two augmented views each), mixed in every batch.
The clips are read as production video is, pre-extracted: on first use they are encoded, then
decoded once, every frame kept, into ArrayRecord frame shards (vicmae_jax.tools.extract_frames)
that the `frames` source reads. That costs 1-3 s once, inside the run; later runs and resumes
over the same media reuse it. (Stored frames carry their start times and pair times aim at frame
centres, so the snap to a stored frame makes a gap 23, 24 or 25 frames.) The input runs in one
Grain worker process, off the interpreter that drives the train step. A ViT with patch 8 at 64 px
trains 300 steps in about a minute on 2 cores and leaves checkpoints, TensorBoard logs,
metrics.jsonl and reconstruction PNGs in the workdir.

  python -m vicmae_jax.main --config=configs/demo.py --workdir=/tmp/vicmae_demo
  python -m vicmae_jax.main --config=configs/demo.py:steps=50 --workdir=/tmp/vicmae_quick

Arguments (after a colon, comma-separated): steps, batch, image_size, media (a folder for the
generated clips, their frames and the photos; default WORKDIR/demo_data).
"""
from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, steps=300, batch=16, image_size=64, media="")
  c = common.base_config()
  c.model.update(variant="test", image_size=args.image_size, patch=8, width=128, depth=4,
                 heads=4, mlp_dim=512, decoder_width=64, decoder_depth=2, decoder_heads=4,
                 projector_hidden=256, projector_out=64, predictor_hidden=256)
  c.batch_size = args.batch
  c.total_steps = args.steps
  c.optim.base_lr = 1.5e-3          # a small model on a tiny dataset likes a larger lr
  c.steps_per_epoch = 10
  c.optim.warmup_epochs = 2.0
  # Expanded under WORKDIR/demo_data, or under `media=DIR` (shared by several runs).
  c.input.sources = [dict(kind="demo", path=args.media)]
  # One worker process prepares batches ahead, with its own interpreter; as a thread of the
  # trainer's process the input kept the step waiting about 40% of its time.
  c.input.num_workers = 1
  c.input.read_threads = 2
  c.input.bad_input_min_examples = 50
  c.input.pair_sampling = dict(mode="fixed_gap", gap=24, gap_max=48, unit="frames")
  c.checkpoint.every_steps = 100
  c.log_every_steps = 10
  c.image_every_steps = 100
  c.num_image_examples = 6
  # In-loop kNN on a small labelled toy task (colour classes; the tests make the same data).
  c.knn_eval.update(every_steps=150, batch_size=16,
                    data=dict(kind="toy", toy="color", train_size=64, val_size=48,
                              size=args.image_size, num_classes=4))
  return c
