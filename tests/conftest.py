"""The tests' session: one JAX persistent compilation cache, fresh per session.

Most of a short training run's time is compiling, and many tests compile the same
programs (the same tiny split and config, each `make_step` a new `jax.jit`); with the
cache on, a program compiled once in the session is loaded after that, not recompiled.
"""

import shutil
import tempfile

import jax
import pytest

_CACHE = tempfile.mkdtemp(prefix="arm_jax_test_jax_cache_")
# Set before any test module is imported: JAX decides on its first compile whether a
# cache is in use. Every program is kept, however fast it compiled (as launch/_cli.py).
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def jax_cache_dir() -> str:
    """The session's compilation cache, for subprocesses (JAX reads it from the
    environment: JAX_COMPILATION_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS)."""
    return _CACHE


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> str:
    """ARM_JAX_CACHE of the launch scripts' batches (tests/_cli_batch.py): a split read or
    a program compiled by one batch is reused by the later ones, as on a user's machine."""
    return str(tmp_path_factory.mktemp("cli_cache"))
