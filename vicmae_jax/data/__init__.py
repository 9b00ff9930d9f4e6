"""Input pipeline for ViC-MAE pre-training: video frame pairs and image views (see docs/data.md).

The trainer needs only `make_pretrain_iterator`, `data_metrics` and, for the demo, `demo_config`.
"""
from vicmae_jax.data.badinput import BadInput, TooManyBadInputs
from vicmae_jax.data.index import IndexFormatError
from vicmae_jax.data.pipeline import (DEFAULTS, PretrainIterator, data_metrics, demo_config,
                                      make_pretrain_iterator)

__all__ = ['BadInput', 'DEFAULTS', 'IndexFormatError', 'PretrainIterator', 'TooManyBadInputs',
           'data_metrics', 'demo_config', 'make_pretrain_iterator']
