r"""The baselines behind docs/performance.md's fixed-cost figures (issue 15).

  python launch/_bench_baselines.py numpy-ease DIR              # plain NumPy float64 EASE
  python launch/_bench_baselines.py toy-products sparse,dense   # R-LARM steps, toy shape

`numpy-ease`: EASE on ml-latest-small (DIR holds its ratings.csv) as a plain NumPy
script does it: Liang et al.'s split as their notebook does it (pandas, NumPy's global
seed), the closed form with `np.linalg.inv` of the float64 Gram matrix, NDCG@100 and
Recall@20/50 of validation and test users; its test figures equal the README's EASE
row. Time the whole process (`/usr/bin/time`) against `python launch/train.py
--dataset=ml-latest-small --data_dir=DIR`.

`toy-products`: R-LARM steps (batch 1024, 20 timed) with the products given, in that
order, on a uniformly random 0/1 matrix of the authors' toy data's shape and density
(8,000 × 1,000, 11%); one JSON line (`_bench_train.run_train_benchmark`).
"""

import json
import os
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _split_train_test(data: pd.DataFrame, test_prop: float = 0.2):
    """Liang et al.'s per-user 80/20 fold-in / held-out split, as in their notebook."""
    tr, te = [], []
    np.random.seed(98765)
    for _, group in data.groupby("userId"):
        k = len(group)
        idx = np.zeros(k, dtype=bool)
        if k >= 5:
            idx[np.random.choice(k, size=int(test_prop * k), replace=False)] = True
        tr.append(group[~idx])
        te.append(group[idx])
    return pd.concat(tr), pd.concat(te)


def _liang_split(path: str, h: int):
    raw = pd.read_csv(path)
    raw = raw[raw["rating"] > 3.5]
    counts = raw.groupby("userId").size()
    raw = raw[raw["userId"].isin(counts.index[counts >= 5])]
    users = raw["userId"].unique()
    users = users[np.random.RandomState(98765).permutation(users.size)]
    n = users.size
    groups = users[: n - 2 * h], users[n - 2 * h : n - h], users[n - h :]
    train = raw[raw["userId"].isin(groups[0])]
    item_ids = {s: i for i, s in enumerate(pd.unique(train["movieId"]))}

    def matrix(df, rows):
        r = df["userId"].map({u: i for i, u in enumerate(rows)}).to_numpy()
        c = df["movieId"].map(item_ids).to_numpy()
        return sp.csr_matrix((np.ones(len(df)), (r, c)), shape=(len(rows), len(item_ids)))

    def heldout(rows):
        df = raw[raw["userId"].isin(rows) & raw["movieId"].isin(item_ids)]
        return tuple(matrix(part, rows) for part in _split_train_test(df))

    return matrix(train, groups[0]), heldout(groups[1]), heldout(groups[2])


def _evaluate(b: np.ndarray, x_tr, x_te) -> dict:
    scores = np.asarray(x_tr @ b)
    scores[x_tr.nonzero()] = -np.inf
    keep = np.asarray(x_te.sum(1)).ravel() > 0
    scores, truth = scores[keep], x_te[keep].toarray() > 0
    top = np.argpartition(-scores, 100, axis=1)[:, :100]
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
    hits = np.take_along_axis(truth, order, 1)
    disc = 1.0 / np.log2(np.arange(2, 102))
    n_pos = truth.sum(1)
    idcg = np.array([disc[: min(k, 100)].sum() for k in n_pos])
    out = {"ndcg@100": float(((hits * disc).sum(1) / idcg).mean())}
    for k in (20, 50):
        out[f"recall@{k}"] = float((hits[:, :k].sum(1) / np.minimum(k, n_pos)).mean())
    return out


def numpy_ease(data_dir: str, *, C: float = 0.2, h: int = 60) -> None:
    t0 = time.perf_counter()
    x, valid, test = _liang_split(os.path.join(data_dir, "ratings.csv"), h)
    t_split = time.perf_counter()
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += C * x.shape[0]
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    t_fit = time.perf_counter()
    print({"valid": _evaluate(b, *valid), "test": _evaluate(b, *test)})
    print(
        f"numpy: split {t_split - t0:.2f} s, fit {t_fit - t_split:.2f} s, evaluate "
        f"{time.perf_counter() - t_fit:.2f} s, {x.shape[0]} users × {x.shape[1]} items"
    )


def toy_products(order: list[str], density: float = 0.11) -> None:
    import _bench_train

    rng = np.random.default_rng(0)
    x = sp.random(8000, 1000, density=density, format="csr", random_state=rng, dtype=np.float32)
    x.data[:] = 1.0
    row = _bench_train.run_train_benchmark("toy", x, products=order, steps=20)
    print(json.dumps({**row, "order": order}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "numpy-ease":
        numpy_ease(sys.argv[2])
    else:
        toy_products(sys.argv[2].split(","))
