"""arm_jax: adversarial recommender models (RecSys'22) in JAX."""

import setuptools

setuptools.setup(
    name="arm_jax",
    version="0.2.0",
    description=(
        "EASE, EASE-IPW, ARM, R-LARM and R-LARM(NN) in JAX: adversarially reweighted "
        "recommenders for under-served users (Shivaswamy & Garcia-Garcia, RecSys'22)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["arm_jax", "arm_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "jaxlib>=0.4.30",
        "optax>=0.2.2",
        "flax>=0.8.4",
        "chex>=0.1.86",
        "absl-py>=2.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "pandas>=2.0",
        "pyarrow>=14",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "orbax-checkpoint>=0.11",
    ],
    extras_require={
        # CUDA 12 jaxlib from PyPI (NVIDIA driver >= 525); check with jax.devices().
        "gpu": ["jax[cuda12]>=0.4.30"],
        "test": [
            "pytest>=7.4",
            "ruff>=0.5",
            "nbformat>=5.9",
            "nbclient>=0.9",
            "ipykernel>=6.25",
            # tests/test_notebook_install.py builds a wheel of this checkout offline, as
            # a Colab install from ARM_JAX_REPO would; setuptools < 70.1 needs this for it.
            "wheel>=0.40",
        ],
    },
)
