"""vicmae_jax: ViC-MAE (contrastive masked autoencoders on images and video) in JAX / Flax NNX."""
__version__ = "0.1.0"
