"""EASE fit timings: arm_jax (Gram + solve) against the NumPy float64 `inv` baseline.

The baseline is what RecPack and Cornac do: a SciPy sparse Gram matrix densified to
float64 and `np.linalg.inv`. It runs in a subprocess with `OPENBLAS_CORETYPE=Haswell`
(NumPy's bundled OpenBLAS was seen to crash on these AMD machines without it); arm_jax's
own path runs in this process without that variable.
"""

import functools
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import scipy.sparse as sp

from arm_jax import ease, metrics

SHAPES = {  # (users, items, nonzeros) of the paper's training matrices
    "ml-20m-shape": (116_677, 20_108, 8_000_000),
    "msd-shape": (471_355, 41_140, 26_000_000),
    "items-4000-shape": (20_000, 4_000, 200_000),  # small: the mesh's memory per device
}


def synthetic_matrix(n_users: int, n_items: int, nnz: int, *, seed: int = 0) -> sp.csr_matrix:
    """A 0/1 matrix of the given shape with Zipf-like item popularity and user activity."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item_p /= item_p.sum()
    user_p = rng.lognormal(0.0, 1.0, n_users)
    user_p /= user_p.sum()
    rows = rng.choice(n_users, size=nnz, p=user_p)
    cols = rng.choice(n_items, size=nnz, p=item_p)
    x = sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _peak_host_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _peak_device_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _fit_once(x: sp.csr_matrix, C: float, gram: str) -> tuple[jax.Array, dict]:
    start = time.perf_counter()
    gram = jax.block_until_ready(ease.gram_matrix(x, method=gram))
    t_gram = time.perf_counter() - start
    w = jax.block_until_ready(ease.ease_from_gram(gram, jax.numpy.float32(C * x.shape[0])))
    total = time.perf_counter() - start
    return w, {"gram_s": t_gram, "solve_s": total - t_gram, "total_s": total}


def time_arm_jax(x: sp.csr_matrix, C: float, gram: str = "auto") -> tuple[jax.Array, dict]:
    """Fits EASE from the host CSR matrix to W on the device, twice.

    The first (cold) fit includes compilation; on accelerators the timings reported are
    the second's. On the CPU with the SciPy Gram the one fit is reported. `gram` is the
    Gram matrix method (`ease.gram_matrix`).
    """
    w, cold = _fit_once(x, C, gram)
    if jax.default_backend() == "cpu" and gram in ("auto", "sparse"):  # 2 small jits only
        return w, {**cold, "cold_total_s": cold["total_s"]}
    del w
    w, warm = _fit_once(x, C, gram)
    return w, {**warm, "cold_total_s": cold["total_s"]}


def time_numpy_baseline(x: sp.csr_matrix, C: float, w_path: str | None) -> dict:
    """Runs `_baseline_main` in a subprocess; it writes W (float32) to `w_path`."""
    with tempfile.TemporaryDirectory() as tmp:
        x_path = os.path.join(tmp, "x.npz")
        sp.save_npz(x_path, x)
        env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
        out = subprocess.run(
            [sys.executable, __file__, x_path, str(C), w_path or ""],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    gram_s, total_s, peak = map(float, out.stdout.split())
    return {"gram_s": gram_s, "solve_s": total_s - gram_s, "total_s": total_s, "peak_gib": peak}


def _baseline_main(x_path: str, C: float, w_path: str) -> None:
    x = sp.load_npz(x_path).tocsr()
    start = time.perf_counter()
    g = (x.T @ x).toarray().astype(np.float64)
    t_gram = time.perf_counter() - start
    g[np.diag_indices_from(g)] += C * x.shape[0]
    p = np.linalg.inv(g)
    w = p / (-np.diag(p))
    np.fill_diagonal(w, 0.0)
    total = time.perf_counter() - start
    if w_path:
        np.save(w_path, w.astype(np.float32))
    print(t_gram, total, _peak_host_gib())


def compare_metrics(w, w_ref, fold_in, heldout) -> float:
    """Largest difference of mean NDCG@100 / Recall@20 / Recall@50 between two models."""
    a = metrics.summarize(metrics.evaluate(ease.predict, w, fold_in, heldout))
    w_ref = jax.numpy.asarray(w_ref)
    b = metrics.summarize(metrics.evaluate(ease.predict, w_ref, fold_in, heldout))
    return max(abs(a[k] - b[k]) for k in metrics.METRICS)


def run_ease_benchmark(
    name: str, x, *, C: float, baseline: bool, eval_data=None, gram: str = "auto"
) -> dict:
    """Times arm_jax and (optionally) the NumPy baseline on one training matrix."""
    row = {"data": name, "users": x.shape[0], "items": x.shape[1], "nnz": int(x.nnz)}
    row["gram_method"] = gram
    w, ours = time_arm_jax(x, C, gram)
    row.update({f"arm_jax_{k}": v for k, v in ours.items()})
    row["arm_jax_peak_host_gib"] = _peak_host_gib()
    row["arm_jax_peak_device_gib"] = _peak_device_gib()
    if baseline:
        with tempfile.TemporaryDirectory() as tmp:
            w_path = os.path.join(tmp, "w.npy") if eval_data is not None else None
            base = time_numpy_baseline(x, C, w_path)
            row.update({f"numpy_{k}": v for k, v in base.items()})
            row["speedup"] = base["total_s"] / ours["total_s"]
            if eval_data is not None:
                row["max_metric_diff"] = compare_metrics(w, np.load(w_path), *eval_data)
    return row


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:  # Linux: VmRSS now, VmHWM its peak
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def run_inverse_memory(name: str, x, *, C: float) -> dict:
    """Memory of EASE's one-device inverse (what bounds n with a mesh), in bytes per n²:
    XLA's account of the accelerators' program (Cholesky, solve against I; G donated)
    compiled for this backend, and on a CPU the rise of this process's resident memory
    over the G it holds while LAPACK inverts (Linux)."""
    n = x.shape[1]
    row = {"data": name, "items": n}
    l2 = jax.numpy.float32(C * x.shape[0])
    shape = jax.ShapeDtypeStruct((n, n), jax.numpy.float32)
    inverse = functools.partial(ease._ease_weights, inverse=ease._cholesky_inverse)
    m = jax.jit(inverse, donate_argnums=0).lower(shape, l2).compile().memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    row["accelerator_program_bytes_per_n2"] = (peak + m.temp_size_in_bytes) / n**2
    if jax.default_backend() == "cpu":
        gram = jax.block_until_ready(ease.gram_matrix(x))
        jax.block_until_ready(ease.ease_from_gram(jax.numpy.eye(8) * 2.0, l2))  # compiled
        before = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the resident memory now
        jax.block_until_ready(ease.ease_from_gram(gram, l2))
        row["host_rise_bytes_per_n2"] = (_status_bytes("VmHWM") - before) / n**2
    return row


if __name__ == "__main__":
    _baseline_main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
