"""EASE / EASE-IPW against a float64 NumPy closed form on random and real data."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import ease
from arm_jax.errors import ConfigError


def _ref_ease(x, C, weights=None):
    """Authors' scaling: P = (XᵀDX/m + C·I)⁻¹, W = I − P diag(1/diag P), float64."""
    x = np.asarray(x.toarray() if sp.issparse(x) else x, np.float64)
    m, n = x.shape
    d = np.ones(m) if weights is None else weights
    p = np.linalg.inv(x.T @ (d[:, None] * x) / m + C * np.eye(n))
    w = np.eye(n) - p / np.diag(p)[None, :]
    np.fill_diagonal(w, 0.0)
    return w


def _random_x(seed, m=400, n=150, density=0.06):
    rng = np.random.default_rng(seed)
    x = (rng.random((m, n)) < density).astype(np.float32)
    x[0] = 0  # an empty user
    return sp.csr_matrix(x)


def _rel(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max()


@pytest.mark.parametrize("method", ["sparse", "device", "pairs"])
def test_fit_ease_float32_matches_reference(method):
    x = _random_x(0)
    w = ease.fit_ease(x, C=0.02, gram_method=method)
    assert w.dtype == jnp.float32 and w.shape == (150, 150)
    assert _rel(w, _ref_ease(x, 0.02)) < 1e-4
    np.testing.assert_array_equal(np.diag(np.asarray(w)), 0.0)


def test_fit_ease_float64_matches_reference():
    x = _random_x(1)
    with jax.enable_x64(True):
        w = ease.fit_ease(x, C=0.01, dtype=jnp.float64)
        assert w.dtype == jnp.float64
        assert _rel(w, _ref_ease(x, 0.01)) < 1e-5


def test_float64_without_x64_is_a_config_error():
    with pytest.raises(ConfigError, match="jax_enable_x64"):
        ease.fit_ease(_random_x(2), C=0.01, dtype=jnp.float64)


def test_l2_is_C_times_m():
    x = _random_x(3)
    w_c = ease.fit_ease(x, C=0.05)
    w_l2 = ease.fit_ease(x, l2=0.05 * x.shape[0])
    np.testing.assert_allclose(w_c, w_l2, atol=1e-6)
    with pytest.raises(ConfigError):
        ease.fit_ease(x, C=0.05, l2=1.0)
    with pytest.raises(ConfigError):
        ease.fit_ease(x, C=-1.0)


def test_ipw_weights_rescaled_to_m():
    x = _random_x(4)
    w = ease.ipw_weights(x, beta=0.6)
    theta = np.maximum(np.diff(x.indptr), 1).astype(np.float64)
    assert w.sum() == pytest.approx(x.shape[0])
    ref = theta**-0.6
    np.testing.assert_allclose(w, ref * x.shape[0] / ref.sum())
    assert w[np.diff(x.indptr) > 12].max() < w[np.diff(x.indptr) < 6].min()
    with pytest.raises(ConfigError):
        ease.ipw_weights(x, beta=-0.1)


def test_ipw_with_beta_zero_is_ease_and_weighted_matches_reference():
    x = _random_x(5)
    w0 = ease.fit_ease(x, C=0.02, weights=ease.ipw_weights(x, beta=0.0))
    np.testing.assert_allclose(w0, ease.fit_ease(x, C=0.02), atol=1e-6)
    weights = ease.ipw_weights(x, beta=0.8)
    for method in ("sparse", "device", "pairs"):
        w = ease.fit_ease(x, C=0.02, weights=weights, gram_method=method)
        assert _rel(w, _ref_ease(x, 0.02, weights)) < 1e-4


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_gram_from_chunks_equals_dense(chunk_size):
    x = _random_x(6, m=130, n=70, density=0.2)
    dense = x.toarray().astype(np.float64)
    g = ease.gram_matrix(x, method="device", chunk_size=chunk_size)
    np.testing.assert_array_equal(np.asarray(g), dense.T @ dense)
    weights = np.random.default_rng(0).random(130)
    gw = ease.gram_matrix(x, weights, method="device", chunk_size=chunk_size)
    np.testing.assert_allclose(gw, dense.T @ (weights[:, None] * dense), rtol=1e-5)


@pytest.mark.parametrize("pairs_per_chunk", [1, 50, 997, 2**20])
def test_gram_from_item_pairs_equals_dense(pairs_per_chunk):
    # Small chunks: heavy users' pairs span several chunks; empty users own no pairs.
    x = _random_x(9, m=120, n=60, density=0.15).tolil()
    x[[0, 5, 119]] = 0
    x = x.tocsr()
    x.eliminate_zeros()
    dense = x.toarray().astype(np.float64)
    g = ease.gram_matrix(x, method="pairs", pairs_per_chunk=pairs_per_chunk)
    np.testing.assert_array_equal(np.asarray(g), dense.T @ dense)
    weights = np.random.default_rng(1).random(120) + 0.1
    gw = ease.gram_matrix(x, weights, method="pairs", pairs_per_chunk=pairs_per_chunk)
    np.testing.assert_allclose(gw, dense.T @ (weights[:, None] * dense), rtol=1e-5)
    empty = sp.csr_matrix((4, 6), dtype=np.float32)
    g0 = ease.gram_matrix(empty, method="pairs", pairs_per_chunk=pairs_per_chunk)
    np.testing.assert_array_equal(np.asarray(g0), np.zeros((6, 6)))


def test_save_and_load_model(tmp_path):
    w = ease.fit_ease(_random_x(7), C=0.02)
    path = tmp_path / "model.npz"
    ease.save_model(path, w, item_ids=np.arange(150))
    w2, meta = ease.load_model(path)
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(meta["item_ids"], np.arange(150))


@pytest.mark.skipif(not os.environ.get("ARM_JAX_TEST_DATA"), reason="ARM_JAX_TEST_DATA unset")
def test_fit_ease_on_real_split_matches_reference():
    from arm_jax import data

    split = data.load_split("ml-100k", os.path.join(os.environ["ARM_JAX_TEST_DATA"], "ml-100k"))
    w = ease.fit_ease(split.train, C=0.5)
    assert _rel(w, _ref_ease(split.train, 0.5)) < 1e-4


def test_block_symmetric_gram_equals_dense():
    x = _random_x(8, m=300, n=4100, density=0.01)
    dense = x.toarray().astype(np.float64)
    g = ease.gram_matrix(x, method="device", chunk_size=128)
    np.testing.assert_array_equal(np.asarray(g), dense.T @ dense)


def test_ease_benchmark_smoke():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
    import _bench_ease

    x = _bench_ease.synthetic_matrix(300, 40, 2000)
    heldout = _random_x(10, m=20, n=40, density=0.1)
    rows = {
        gram: _bench_ease.run_ease_benchmark(
            "tiny", x, C=0.01, baseline=baseline, eval_data=(heldout, heldout), gram=gram
        )
        for gram, baseline in (("sparse", True), ("pairs", False))
    }
    assert rows["sparse"]["max_metric_diff"] < 1e-4 and rows["sparse"]["speedup"] > 0
    assert rows["pairs"]["gram_method"] == "pairs" and "speedup" not in rows["pairs"]
    # EASE's one-device inverse (README, "More than one device"): G donated, its factor
    # and the solve against I, 4·n² bytes each in XLA's account, past a few scalars.
    row = _bench_ease.run_inverse_memory("tiny", x, C=0.01)
    assert row["items"] == 40 and 12.0 <= row["accelerator_program_bytes_per_n2"] < 12.5
    assert row["host_rise_bytes_per_n2"] >= 0.0


def test_every_gram_method_reads_values_and_skips_stored_zeros():
    rng = np.random.default_rng(14)
    x = _random_x(14, m=90, n=40, density=0.2).tocsr()
    x.data = rng.choice([1.0, 2.0, 0.5], size=x.nnz).astype(np.float32)  # not 0/1
    x.data[::4] = 0.0  # explicitly stored zeros: not interactions
    dense = x.toarray().astype(np.float64)
    weights = rng.random(90) + 0.1
    for method in ("sparse", "device", "pairs"):
        g = ease.gram_matrix(x, method=method, chunk_size=16, pairs_per_chunk=100)
        np.testing.assert_allclose(g, dense.T @ dense, rtol=1e-6, err_msg=method)
        gw = ease.gram_matrix(x, weights, method=method, chunk_size=16, pairs_per_chunk=100)
        np.testing.assert_allclose(gw, dense.T @ (weights[:, None] * dense), rtol=1e-5)
    assert x.nnz > (dense != 0).sum()  # the caller's matrix is left as it was
    theta = np.maximum((dense != 0).sum(1), 1)
    w = ease.ipw_weights(x, beta=0.5)
    np.testing.assert_allclose(w, theta**-0.5 * 90 / (theta**-0.5).sum(), rtol=1e-12)


def test_weighted_device_gram_is_float64_in_float64():
    x = _random_x(15, m=70, n=30, density=0.3)
    weights = ease.ipw_weights(x, beta=0.5)
    dense = x.toarray().astype(np.float64)
    with jax.enable_x64(True):
        for method in ("sparse", "device", "pairs"):
            g = ease.gram_matrix(x, weights, dtype=jnp.float64, method=method, chunk_size=16)
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, dense.T @ (weights[:, None] * dense), rtol=1e-13)
