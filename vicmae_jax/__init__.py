"""vicmae_jax: ViC-MAE (contrastive masked autoencoders on images and video) in JAX / Flax NNX."""
__version__ = "0.1.0"

# Chooses the object-storage client (fsspec) before anything touches a gs:// path: vicmae_jax/fs.py.
from vicmae_jax import fs as _fs  # noqa: E402,F401
