"""arm_jax: adversarially reweighted recommenders (RecSys'22) as pure JAX functions."""

__version__ = "0.1.0"
