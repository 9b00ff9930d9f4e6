"""vicmae_jax: ViC-MAE (contrastive masked autoencoders on images and video) in JAX / Flax NNX."""
__version__ = "0.1.0"

# Imported for its effect: it chooses the object-storage client (fsspec) before anything touches
# a gs:// path (vicmae_jax/fs.py).
import importlib as _importlib  # noqa: E402

_importlib.import_module("vicmae_jax.fs")
