"""The CPU backend's in-place EASE (`ease_host`) gives the jitted path's W to the bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import ease, ease_host, learners


def _random_x(seed, m=500, n=300, density=0.05):
    rng = np.random.default_rng(seed)
    x = (rng.random((m, n)) < density).astype(np.float32)
    x[3] = 0  # an empty user
    return sp.csr_matrix(x)


def _old_sparse_gram(x, weights, dtype):
    """`gram_matrix(method="sparse")` as it was: the whole sparse product, densified,
    cast by JAX."""
    x = ease.interactions(x)
    xt = x.T.tocsr() if weights is None else (x.T @ sp.diags(weights)).tocsr()
    g = (xt @ x).astype(np.float64 if weights is not None else np.float32)
    return jnp.asarray(g.toarray(), dtype=dtype)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows and columns, so every loop runs many times with a ragged end."""
    monkeypatch.setattr(ease_host, "_BLOCK_ELEMENTS", 7 * 300)
    monkeypatch.setattr(ease_host, "_MIRROR_STEP", 64)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_host_fit_is_bit_identical_to_the_jitted_path(small_blocks, monkeypatch, dtype, weighted):
    assert jax.default_backend() == "cpu" and ease.host_solve()
    calls = []
    solve = ease_host.ease_in_place
    monkeypatch.setattr(ease_host, "ease_in_place", lambda *a: calls.append(1) or solve(*a))
    # x64 set globally, not with the thread-local `jax.enable_x64`: the jitted path's
    # LAPACK callback may run on another thread, which would see x64 off and be handed
    # a float32 operand ("Incorrect output dtype"; launch scripts set it globally too).
    jax.config.update("jax_enable_x64", dtype == jnp.float64)
    try:
        _compare_paths(dtype, weighted)
    finally:
        jax.config.update("jax_enable_x64", False)
    assert len(calls) == 3  # fit_ease took the host path each time


def _compare_paths(dtype, weighted):
    for seed in range(3):
        x = _random_x(seed)
        weights = ease.ipw_weights(x, beta=0.5) if weighted else None
        l2 = 0.03 * x.shape[0]
        old_gram = _old_sparse_gram(x, weights, dtype)
        sparse_gram = ease.gram_matrix(x, weights, dtype=dtype, method="sparse")
        assert np.asarray(sparse_gram).tobytes() == np.asarray(old_gram).tobytes()
        old = np.asarray(ease.ease_from_gram(old_gram, jnp.asarray(l2, dtype)))
        new = ease.fit_ease(x, l2=l2, weights=weights, dtype=dtype)
        assert new.dtype == dtype and new.shape == old.shape
        assert np.array_equal(np.asarray(new), old)
        assert np.asarray(new).tobytes() == old.tobytes()  # signed zeros too


def test_ease_from_gram_overwrites_a_numpy_gram(small_blocks):
    x = _random_x(5)
    gram = ease.gram_for_solve(x, dtype=jnp.float32)
    assert isinstance(gram, np.ndarray) and gram.ctypes.data % 64 == 0
    w = ease.ease_from_gram(gram, jnp.float32(0.05 * x.shape[0]))
    assert isinstance(w, jax.Array)
    np.testing.assert_array_equal(gram, np.asarray(w))  # the buffer now holds W
    np.testing.assert_array_equal(np.diag(gram), 0.0)


def test_host_fit_matches_a_float64_reference():
    x = _random_x(6, m=300, n=120)
    C = 0.02
    xd = x.toarray().astype(np.float64)
    p = np.linalg.inv(xd.T @ xd / x.shape[0] + C * np.eye(x.shape[1]))
    ref = -p / np.diag(p)[None, :]
    np.fill_diagonal(ref, 0.0)
    with jax.enable_x64(True):
        w = np.asarray(ease.fit_ease(x, C=C, dtype=jnp.float64))
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("n", [120, 121])
def test_blocked_inverse_matches_a_float64_reference(monkeypatch, n):
    """Above `_LAPACK_MAX_N` items the inverse is taken as 2×2 blocks (OpenBLAS's threaded
    spotrf crashed at 37k): the same W as float64 EASE, in place, even and odd halves."""
    monkeypatch.setattr(ease_host, "_LAPACK_MAX_N", 64)
    x = _random_x(9, m=400, n=n, density=0.08)
    l2 = 0.02 * x.shape[0]
    xd = x.toarray().astype(np.float64)
    p = np.linalg.inv(xd.T @ xd + l2 * np.eye(n))
    ref = -p / np.diag(p)[None, :]
    np.fill_diagonal(ref, 0.0)
    for dtype, atol in ((np.float64, 1e-11), (np.float32, 2e-5)):
        g = ease_host.gram(ease.interactions(x), None, dtype=dtype)
        w = ease_host.ease_in_place(g, l2)
        assert w is g and w.dtype == dtype
        np.testing.assert_allclose(w, ref, rtol=0, atol=atol * np.abs(ref).max())
        a = np.asfortranarray(xd.T @ xd + l2 * np.eye(n)).astype(dtype)
        before = a.copy()
        inverse = ease_host.spd_inverse(a)
        np.testing.assert_array_equal(a, before)  # the callback's operand is left as it was
        np.testing.assert_allclose(inverse, p, rtol=0, atol=atol * np.abs(p).max())


def test_blocked_inverse_not_positive_definite_is_an_error(monkeypatch):
    monkeypatch.setattr(ease_host, "_LAPACK_MAX_N", 2)
    g = ease_host.aligned_empty((6, 6), np.float32)
    g[:] = np.diag([1.0, 1.0, 1.0, -1.0, 1.0, 1.0]).astype(np.float32)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        ease_host.ease_in_place(g, 0.5)


def test_a_gram_lapack_must_copy_gives_the_same_w():
    x = _random_x(7)
    l2 = 0.05 * x.shape[0]
    expected = ease_host.ease_in_place(ease.gram_for_solve(x), l2)
    n = x.shape[1]
    wide = np.zeros((n, n + 5), np.float32)
    view = wide[:, :n]  # not contiguous: f2py copies it for LAPACK
    view[:] = ease.gram_for_solve(x)
    out = ease_host.ease_in_place(view, l2)
    assert out is view and np.array_equal(view, expected)


def test_not_positive_definite_is_an_error():
    g = ease_host.aligned_empty((4, 4), np.float32)
    g[:] = -np.eye(4, dtype=np.float32)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        ease_host.ease_in_place(g, 0.5)


@pytest.mark.parametrize("shape", [(1,), (7, 3), (129, 65)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_aligned_empty(shape, dtype):
    a = ease_host.aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.ctypes.data % 64 == 0 and a.flags.writeable


def test_dense_warm_start_is_fit_ease_at_half_C():
    x = _random_x(8)

    class Config:
        C = 0.04

    params = learners.DENSE_LEARNER.init(jax.random.PRNGKey(0), x.shape[1], Config, x=x)
    expected = np.asarray(ease.fit_ease(x, C=0.02))
    np.testing.assert_array_equal(np.asarray(params["W"]), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_aligned_is_np_load_in_an_aligned_buffer(tmp_path, monkeypatch, dtype):
    monkeypatch.setattr(ease_host, "_READ_BYTES", 1000)  # several reads
    w = np.random.default_rng(0).standard_normal((37, 41)).astype(dtype)
    path = str(tmp_path / "model.npz")
    np.savez(path, W=w, F=np.asfortranarray(w))
    got = ease_host.read_aligned(path, "W")
    np.testing.assert_array_equal(got, w)
    assert got.dtype == dtype and got.ctypes.data % 64 == 0 and got.flags.c_contiguous
    with pytest.raises(ValueError, match="not a C-ordered numeric array"):
        ease_host.read_aligned(path, "F")
