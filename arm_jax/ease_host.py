"""EASE's closed form on the host in one `[n, n]` buffer (the CPU backend's path).

The Gram matrix is written into one 64-byte-aligned NumPy array a block of rows at a
time, then turned into W in place: λ added to its diagonal, LAPACK's potrf and potri on
the buffer itself (its transpose is the Fortran-ordered matrix LAPACK reads, so nothing
is copied), the inverse mirrored, W = −P·diag(1/diag P) a block of rows at a time. At
Gowalla's 40,981 items one float32 `[n, n]` array is 6.7 GB; the jitted path held
several (docs/performance.md). Every step does the arithmetic of `ease.ease_from_gram`'s
jitted path in the same order, so W is the same to the bit (tests/test_ease_host.py).
"""

import functools
import zipfile

import jax
import numpy as np
import scipy.linalg
import scipy.sparse as sp

_ALIGN = 64
"""Bytes: JAX's CPU client aliases a NumPy buffer aligned to this instead of copying it."""

_BLOCK_ELEMENTS = 2**22
"""Elements per block of rows of the Gram matrix and of W (32 MiB of float64; the block's
sparse product, dense for popular items, takes about twice that)."""

_MIRROR_STEP = 2048
"""Columns per block of the in-place mirror."""

_LAPACK_MAX_N = 32_768
"""Above this many items the inverse is taken as 2×2 blocks of half size: scipy's OpenBLAS
(0.3.30) segfaulted in its threaded spotrf at n ≥ 37,000 here (docs/performance.md)."""


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % _ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _row_blocks(n: int, width: int):
    rows = max(1, _BLOCK_ELEMENTS // max(width, 1))
    return ((start, min(start + rows, n)) for start in range(0, n, rows))


def gram(x: sp.csr_matrix, weights: np.ndarray | None, *, dtype) -> np.ndarray:
    """XᵀDX, `[n, n]` in `dtype`, as an aligned NumPy array.

    Args:
      x: `[m, n]` CSR matrix without stored zeros (`ease.interactions`).
      weights: `[m]` user weights or None.
      dtype: float32 or float64.

    Each block of rows is the SciPy sparse product of Xᵀ's rows with X, which sums every
    entry in the order the whole product does; it is computed in float32 for 0/1 counts
    and in float64 for weights, then cast, as `ease.gram_matrix`'s "sparse" method.
    """
    dtype = np.dtype(dtype)
    xt = x.T.tocsr() if weights is None else (x.T @ sp.diags(weights)).tocsr()
    exact = np.dtype(np.float32 if weights is None else np.float64)
    n = x.shape[1]
    g = aligned_empty((n, n), dtype)
    for start, stop in _row_blocks(n, n):
        block = (xt[start:stop] @ x).astype(exact, copy=False)
        if exact == dtype:
            block.toarray(out=g[start:stop])
        else:
            g[start:stop] = block.toarray()
    return g


def mirror_lower(p: np.ndarray) -> np.ndarray:
    """Copies `p`'s lower triangle onto its upper one in place, a block of columns at a
    time: a full `tril + tril.T` would need two more n×n temporaries."""
    n = p.shape[0]
    for start in range(0, n, _MIRROR_STEP):
        stop = min(start + _MIRROR_STEP, n)
        block = p[start:stop, start:stop]
        block[:] = np.tril(block) + np.tril(block, -1).T
        p[start:stop, stop:] = p[stop:, start:stop].T
    return p


def _potrf_potri(a: np.ndarray, *, overwrite: bool) -> np.ndarray:
    # LAPACK potrf + potri: n³ flops in all, against 2n³ for an LU inverse.
    if a.shape[0] > _LAPACK_MAX_N:
        return _blocked_potrf_potri(a if overwrite else np.array(a, order="F"))
    potrf, potri = scipy.linalg.get_lapack_funcs(("potrf", "potri"), (a,))
    c = _checked("potrf", potrf(a, lower=True, clean=False, overwrite_a=overwrite))
    return mirror_lower(_checked("potri", potri(c, lower=True, overwrite_c=True)))


def _checked(name: str, result):
    """A LAPACK wrapper's output, or LinAlgError naming the routine and its info."""
    out, info = result
    if info > 0 and name == "potrf":
        raise np.linalg.LinAlgError(f"Cholesky failed (info={info}): matrix not positive definite")
    if info != 0:
        raise np.linalg.LinAlgError(f"{name} failed (info={info})")
    return out


def _blocked_potrf_potri(a: np.ndarray) -> np.ndarray:
    """`_potrf_potri` in place on `a` as 2×2 blocks, A = [[A11, ·], [A21, A22]]:
    L11 = chol(A11), L21 = A21·L11⁻ᵀ, L22 = chol(A22 − L21·L21ᵀ); M = L⁻¹ has
    M21 = −M22·L21·M11; P = MᵀM is [[M11ᵀM11 + M21ᵀM21, ·], [M22ᵀM21, M22ᵀM22]].
    The same n³ flops as potrf + potri; each block is copied out (f2py needs contiguous
    arrays), so the temporaries add 3·(n/2)² elements."""
    potrf, trtri, lauum = scipy.linalg.get_lapack_funcs(("potrf", "trtri", "lauum"), (a,))
    trsm, syrk, trmm = scipy.linalg.get_blas_funcs(("trsm", "syrk", "trmm"), (a,))
    top, bottom = slice(0, a.shape[0] // 2), slice(a.shape[0] // 2, a.shape[0])
    block = functools.partial(np.array, order="F")
    l11 = _checked("potrf", potrf(block(a[top, top]), lower=True, clean=False, overwrite_a=True))
    l21 = trsm(1.0, l11, block(a[bottom, top]), side=1, lower=1, trans_a=1, overwrite_b=1)
    schur = syrk(-1.0, l21, beta=1.0, c=block(a[bottom, bottom]), lower=1, overwrite_c=1)
    l22 = _checked("potrf", potrf(schur, lower=True, clean=False, overwrite_a=True))
    m11 = _checked("trtri", trtri(l11, lower=1, overwrite_c=1))
    m22 = _checked("trtri", trtri(l22, lower=1, overwrite_c=1))
    m21 = trmm(-1.0, m22, trmm(1.0, m11, l21, side=1, lower=1, overwrite_b=1), lower=1,
               overwrite_b=1)  # fmt: skip
    p11 = syrk(1.0, m21, beta=1.0, c=_checked("lauum", lauum(m11, lower=1, overwrite_c=1)),
               trans=1, lower=1, overwrite_c=1)  # fmt: skip
    a[top, top] = p11
    a[bottom, top] = trmm(1.0, m22, m21, lower=1, trans_a=1, overwrite_b=1)  # M22ᵀ·M21
    a[bottom, bottom] = _checked("lauum", lauum(m22, lower=1, overwrite_c=1))
    return mirror_lower(a)


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix (its lower triangle is read) in a
    new Fortran-ordered array: `ease`'s host callback inside jit."""
    return _potrf_potri(a, overwrite=False)


def ease_in_place(g: np.ndarray, l2) -> np.ndarray:
    """EASE's W from the Gram matrix `g` (an `[n, n]` NumPy array, overwritten: the
    result is `g` itself; LAPACK works on a C-ordered one without a copy).

    W = −P·diag(1/diag P) with a zero diagonal, P = (G + l2·I)⁻¹.
    """
    n = g.shape[0]
    diagonal = (np.arange(n), np.arange(n))
    g[diagonal] += np.asarray(l2, g.dtype)  # G + λI in g's dtype, as the jitted path
    # LAPACK reads gᵀ (Fortran order, no copy) and its lower triangle, i.e. g's upper
    # one: made g's lower one, the triangle the jitted path's (copied) matrix gives it.
    mirror_lower(g)
    p = _potrf_potri(g.T, overwrite=True)
    if not np.shares_memory(p, g):  # f2py copied after all: same numbers, more memory
        g.T[:] = p
    # P is symmetric now, so g (= Pᵀ) is P. XLA computes −P / diag P as (−P)·(1/diag P)
    # (its simplifier turns a division by a broadcast into a product): so does this.
    reciprocal = np.divide(np.asarray(1.0, g.dtype), g[diagonal])
    for start, stop in _row_blocks(n, n):
        block = g[start:stop]
        np.multiply(block, reciprocal, out=block)
        np.negative(block, out=block)  # −(p·r) is (−p)·r to the bit
    g[diagonal] = 0.0
    return g


_READ_BYTES = 2**26
"""Bytes per read of `read_aligned` (64 MiB)."""


def read_aligned(path: str, name: str) -> np.ndarray:
    """Array `name` of the `.npz` at `path` read into an `aligned_empty` buffer, for
    `to_device` without a copy (`np.load` would return an unaligned one: a second W).

    Raises:
      ValueError: the member is not a C-ordered array of a numeric dtype.
    """
    with zipfile.ZipFile(path) as z, z.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(f)
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{path}: {name} is not a C-ordered numeric array")
        out = aligned_empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(view):
            read = f.readinto(view[pos : pos + _READ_BYTES])
            if not read:
                raise ValueError(f"{path}: {name} ends after {pos} of {len(view)} bytes")
            pos += read
    return out


def to_device(w: np.ndarray) -> jax.Array:
    """`w` as a JAX array on the CPU backend, aliasing its aligned buffer (no copy).

    A jitted step that donates such an array still writes a new buffer (XLA does not
    reuse memory it does not own), so a learner that is trained copies it once first.
    """
    return jax.device_put(w, may_alias=True)
