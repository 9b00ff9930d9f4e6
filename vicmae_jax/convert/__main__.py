"""Command line for weight conversion.

  python -m vicmae_jax.convert to-jax --src vicmae_pretrain_vit_large.pth --variant L/16 --out DIR
  python -m vicmae_jax.convert to-torch --src DIR --out encoder.safetensors [--layout timm|hf]
  python -m vicmae_jax.convert inspect --src FILE

Flags are snake_case, as everywhere in the package (`--image_size`); the kebab-case spellings
of earlier releases (`--image-size`) still work.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from flax import nnx

from vicmae_jax import params_io, paths
from vicmae_jax.convert import (LAYOUTS, detect_layout, export_state_dict, load_pytorch_weights,
                                read_state_dict, save_safetensors)
from vicmae_jax.models import ViCMAE, model_config


def _to_jax(args) -> None:
  cfg = model_config(args.variant, image_size=args.image_size,
                     contrastive_mode=args.contrastive_mode,
                     learned_pos_embed=args.learned_pos_embed)
  model = ViCMAE(cfg, rngs=nnx.Rngs(args.seed))
  parts = tuple(args.parts.split(",")) if args.parts else None
  report = load_pytorch_weights(model, args.src, parts=parts)
  params = nnx.to_pure_dict(nnx.state(model))
  params_io.save_params(args.out, params, cfg)
  print(f"imported {report.parts} ({report.layout} layout) from {args.src} -> {args.out}")
  for note in report.notes:
    print(f"note: {note}")
  if report.extras:
    print(f"not imported (classifier / fc_norm): {sorted(report.extras)}")
  if report.skipped:
    print(f"skipped (not weights): {', '.join(report.skipped)}")


def _to_torch(args) -> None:
  params, cfg = params_io.load_params(args.src)
  parts = tuple(args.parts.split(",")) if args.parts else ("encoder",)
  tensors = export_state_dict(params, cfg, parts=parts, layout=args.layout)
  save_safetensors(tensors, args.out, metadata={"variant": cfg.variant})
  print(f"wrote {len(tensors)} tensors ({args.layout} layout, {parts}) -> {args.out}")


def _inspect(args) -> None:
  state, skipped = read_state_dict(args.src)
  print(f"{len(state)} tensors, layout {detect_layout(state)}, "
        f"{sum(v.size for v in state.values()) / 1e6:.2f}M values")
  if skipped:
    print(f"skipped (not weights): {', '.join(skipped)}")
  for key in sorted(state):
    print(f"  {key} {tuple(state[key].shape)} {state[key].dtype}")


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
  """`--name` in snake_case, plus its kebab-case spelling as a hidden alias (older commands)."""
  parser.add_argument(f"--{name}", **kwargs)
  if "_" in name:
    same = {k: v for k, v in kwargs.items() if k in ("type", "action", "choices")}
    # SUPPRESS as default: an unused alias must not overwrite the value or default of `--name`.
    parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **same)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m vicmae_jax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("to-jax", help="PyTorch .pth/.safetensors -> vicmae_jax params directory")
  _flag(p, "src", required=True, type=paths.resolve)
  _flag(p, "out", required=True, type=paths.resolve)
  _flag(p, "variant", required=True)
  _flag(p, "image_size", type=int, default=224)
  _flag(p, "contrastive_mode", default="shared_projector",
        choices=("shared_projector", "ema_target"))
  _flag(p, "learned_pos_embed", action="store_true",
        help="keep the checkpoint's position table (fine-tuned models)")
  _flag(p, "parts", default=None, help="comma list of encoder,decoder,projector")
  _flag(p, "seed", type=int, default=0, help="init of parts the checkpoint lacks")
  p.set_defaults(fn=_to_jax)
  p = sub.add_parser("to-torch", help="vicmae_jax params directory -> PyTorch safetensors")
  _flag(p, "src", required=True, type=paths.resolve)
  _flag(p, "out", required=True, type=paths.resolve)
  _flag(p, "layout", default="timm", choices=LAYOUTS)
  _flag(p, "parts", default=None, help="comma list; default: encoder")
  p.set_defaults(fn=_to_torch)
  p = sub.add_parser("inspect", help="list the tensors of a PyTorch checkpoint")
  _flag(p, "src", required=True, type=paths.resolve)
  p.set_defaults(fn=_inspect)
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  try:
    args.fn(args)
    sys.stdout.flush()
  except BrokenPipeError:
    # The reader went away (`... inspect | head`): stop quietly, as command line tools do. Point
    # stdout at /dev/null so the interpreter's last flush does not raise the error again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  return 0


if __name__ == "__main__":
  sys.exit(main())
