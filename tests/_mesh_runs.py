"""Sharded against single-device runs, in a process of 8 CPU devices (test_sharding.py).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_mesh_runs.py WORKDIR

Writes one JSON object of differences to WORKDIR/checks.json; the tests assert on it.
Run as a script because the pytest process has already started jax with one device.
"""

import json
import re
import sys
import types

import jax
import numpy as np
import scipy.sparse as sp

from arm_jax import (
    adversarial,
    configs,
    ease,
    experiment,
    gda,
    learners,
    loop,
    metrics,
    sharding,
    training,
)
from arm_jax.data import Split

M, N, H = 96, 256, 32  # users, items (divisible by 8), validation and test users


def tiny_split(seed=0):
    rng = np.random.default_rng(seed)

    def rows(k):
        x = (rng.random((k, N)) < 0.05).astype(np.float32)
        x[np.arange(k), rng.integers(0, N, k)] = 1.0
        return sp.csr_matrix(x)

    def fold(k):
        x = rows(k).toarray()
        mask = rng.random(x.shape) < 0.7
        return sp.csr_matrix(x * mask), sp.csr_matrix(x * ~mask)

    (valid_tr, valid_te), (test_tr, test_te) = fold(H), fold(H)
    return types.SimpleNamespace(
        train=rows(M), valid_tr=valid_tr, valid_te=valid_te, test_tr=test_tr,
        test_te=test_te, dataset="random",
    )  # fmt: skip


def config(**kw):
    # No warm-up: the steps checked are the run's first ones (one compiled program each).
    base = dict(C=0.01, B=1.0, learning_rate=1e-2, batch_size=16, max_epochs=3, patience=10)
    base.update(warmup_epochs=0)
    return configs.model_config("synthetic", "rlarm", **{**base, **kw})


def three_steps(x, cfg, mesh):
    """The learner's params at the start and after 3 descent–ascent steps (adversary
    active from step 0), and the final state."""
    spec = adversarial.make_model("rlarm", learners.make_learner(cfg))
    state = gda.init_state(
        jax.random.PRNGKey(0), N, adversary=spec.adversary, config=cfg, learner=spec.learner,
        mesh=mesh,
    )  # fmt: skip
    start = jax.device_get(state.params)
    step = gda.make_step(spec, cfg, warmup_steps=0, mesh=mesh)
    batches = loop.epoch_batches(x, seed=0, epoch=0, batch_size=16, nnz_cap=loop.nnz_cap(x, 16))
    for i, batch in zip(range(3), batches):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    return start, jax.device_get(state.params), state


def max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


STEP_CASES = {  # (config, meshes, reference): kept few, each one compiles
    "sparse": ({}, ("items:8",), None),  # "auto": sparse on CPUs
    # The dense product's single-device step is the sparse one's within 1e-6: the sparse
    # step is its reference (one compile fewer).
    "dense": (dict(product="dense"), ("users:2,items:4",), "sparse"),
    "low_rank": (dict(learner="low_rank", rank=8), ("items:8",), None),
}


def step_checks(x) -> dict:
    out, plain = {}, {}
    for name, (kw, meshes, reference) in STEP_CASES.items():
        cfg = config(**kw)
        plain[name] = plain[reference] if reference else three_steps(x, cfg, None)[:2]
        start, ref = plain[name]
        for spec in meshes:
            sharded_start, params, state = three_steps(x, cfg, sharding.make_mesh(spec))
            leaf = jax.tree_util.tree_leaves(state.params)[0]
            moment = jax.tree_util.tree_leaves(state.opt_state)[-1]
            out[f"step/{name}/{spec}"] = {
                "start_diff": max_diff(start, sharded_start),
                "diff": max_diff(ref, params),
                "moved": max_diff(start, ref),
                "spec": str(leaf.sharding.spec),
                "moment_spec": str(moment.sharding.spec),
                "shard_shape": list(leaf.addressable_shards[0].data.shape),
            }
    return out


def test_metrics(result, split, mesh=None) -> dict:
    # with_loss, as `run_experiment` evaluates: `ease_checks` reuses these programs.
    per_user = metrics.evaluate(
        result.learner_predict, result.learner, split.test_tr, split.test_te, with_loss=True,
        mesh=mesh,
    )  # fmt: skip
    return {k: np.asarray(per_user[k]).tolist() for k in metrics.METRICS}


def run_checks(split, workdir) -> dict:
    cfg, mesh = config(), sharding.make_mesh("items:8")
    kw = dict(model="rlarm", config=cfg, seed=3)
    plain = training.train_adversarial(split, **kw)
    sharded = training.train_adversarial(split, mesh=mesh, workdir=f"{workdir}/full", **kw)

    def kill_at_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    try:
        training.train_adversarial(
            split, mesh=mesh, workdir=f"{workdir}/killed", checkpoint_every=1,
            callback=kill_at_2, **kw,
        )  # fmt: skip
    except KeyboardInterrupt:
        pass
    resumed = training.train_adversarial(
        split, mesh=mesh, workdir=f"{workdir}/killed", resume=True, **kw
    )
    np.save(f"{workdir}/plain_learner.npy", np.asarray(plain.learner))  # _two_process's
    return {
        "run/plain": test_metrics(plain, split),
        "run/plain_losses": [r["learner_loss"] for r in plain.history],
        "run/sharded": test_metrics(sharded, split, mesh),
        "run/learner_diff": max_diff(plain.learner, sharded.learner),
        "run/learner_spec": str(sharded.learner.sharding.spec),
        "resume/learner_equal": bool(np.array_equal(sharded.learner, resumed.learner)),
        "resume/adversary_diff": max_diff(sharded.adversary, resumed.adversary),
        "resume/losses": [[r["learner_loss"] for r in h.history] for h in (sharded, resumed)],
        "resume/best_epoch": [sharded.best_epoch, resumed.best_epoch],
    }


GATHER = re.compile(r"=\s*(.*?)\s+all-gather(?:-start)?\(")  # its result type: group 1
SHAPE = re.compile(r"[a-z][a-z0-9]*\[([0-9,]*)\]")


def _gather_shapes(hlo: str) -> list[list[int]]:
    """The shape of every array an all-gather of the compiled `hlo` puts out."""
    results = [m.group(1) for m in map(GATHER.search, hlo.splitlines()) if m]
    return [[int(d) for d in dims.split(",") if d] for r in results for dims in SHAPE.findall(r)]


EVAL_N, EVAL_USERS, EVAL_CHUNK = 1024, 80, 32  # n/8 = 128 items a shard: above k = 100


def eval_checks() -> dict:
    """Per-user metrics of the sharded evaluation against the unsharded one, on real
    and on integer (many-tied) scores, and the all-gathers of the compiled chunk."""
    rng = np.random.default_rng(1)
    fold_in, heldout = (
        sp.csr_matrix((rng.random((EVAL_USERS, EVAL_N)) < 0.02).astype(np.float32))
        for _ in range(2)
    )
    weights = {
        "real": rng.standard_normal((EVAL_N, EVAL_N)).astype(np.float32),
        "tied": (rng.random((EVAL_N, EVAL_N)) < 0.01).astype(np.float32),  # integer scores
    }
    scores = fold_in.toarray() @ weights["tied"]
    out = {"tied_fraction": 1 - np.mean([len(np.unique(s)) for s in scores]) / EVAL_N}
    cases = [("real", "sparse", "items:8"), ("tied", "dense", "items:8")]
    for w_name, product, spec in [*cases, ("tied", "sparse", "users:2,items:4")]:
        predict, mesh = learners.dense_predictor(product), sharding.make_mesh(spec)
        kw = dict(chunk_size=EVAL_CHUNK, with_loss=True)
        plain = metrics.evaluate(
            predict, jax.numpy.asarray(weights[w_name]), fold_in, heldout, **kw
        )
        w = sharding.place_learner(weights[w_name], mesh)
        sharded = metrics.evaluate(predict, w, fold_in, heldout, mesh=mesh, **kw)
        out[f"{w_name}/{product}/{spec}"] = {
            k: [np.asarray(plain[k]).tolist(), np.asarray(sharded[k]).tolist()]
            for k in (*metrics.METRICS, "best_rank", "sq_loss")
        }
    mesh = sharding.make_mesh("items:8")
    w = sharding.place_learner(weights["real"], mesh)
    x = sharding.put(np.zeros((EVAL_CHUNK, EVAL_N), np.float32), sharding.replicated(mesh))
    for name, fn, product, kw in [
        ("sharded/sparse", metrics._evaluate_chunk_sharded, "sparse", dict(mesh=mesh)),
        ("sharded/dense", metrics._evaluate_chunk_sharded, "dense", dict(mesh=mesh)),
        ("gspmd/dense", metrics._evaluate_chunk, "dense", {}),  # XLA alone: it gathers
    ]:
        predict = learners.dense_predictor(product)
        hlo = fn.lower(predict, w, x, x, with_loss=True, **kw).compile().as_text()
        out[f"gathers/{name}"] = _gather_shapes(hlo)
    return out


def ease_checks(split, workdir) -> dict:
    """EASE and EASE-IPW with the Gram matrix built by columns and W handed out so,
    against the unsharded fits; an EASE run on the mesh against the unsharded fit."""
    x, mesh = split.train, sharding.make_mesh("items:8")
    on_devices = dict(gram_method="device", mesh=mesh)  # "auto" is the host's on CPUs
    gram = ease.gram_matrix(x, mesh=mesh, method="device", chunk_size=40)
    out = {
        "gram_spec": str(gram.sharding.spec),
        "gram_shard": list(gram.addressable_shards[0].data.shape),
        "gram_equal": bool(np.array_equal(gram, ease.gram_matrix(x))),
        "host_gram_spec": str(ease.gram_matrix(x, mesh=mesh).sharding.spec),
    }
    ipw = ease.ipw_weights(x, beta=0.5)
    plain = {}
    for name, weights in (("ease", None), ("ipw", ipw)):
        plain[name] = ease.fit_ease(x, C=0.01, weights=weights)
        w = ease.fit_ease(x, C=0.01, weights=weights, **on_devices)
        out[f"{name}/spec"] = str(w.sharding.spec)
        out[f"{name}/equal"] = bool(np.array_equal(plain[name], w))
        out[f"{name}/diff"] = float(np.abs(plain[name] - np.asarray(w)).max())
    w = ease.fit_ease(x, C=0.01, weights=ipw, mesh=mesh)  # the CPU's float64 host sums
    out["ipw/equal_auto"] = bool(np.array_equal(plain["ipw"], w))
    device = ease.gram_matrix(x, ipw, method="device", chunk_size=40)
    sharded = ease.gram_matrix(x, ipw, method="device", mesh=mesh, chunk_size=40)
    out["ipw/gram_equal_device"] = bool(np.array_equal(device, sharded))
    # A run on the mesh (its test chunks compiled by `run_checks` already) against the
    # unsharded fit evaluated on one device.
    ids = dict(train_user_ids=np.arange(M), valid_user_ids=np.arange(H), item_ids=np.arange(N))
    full = Split(**vars(split), test_user_ids=np.arange(H), **ids)
    cfg = configs.model_config("synthetic", "ease", C=0.01)
    experiment.run_experiment(full, model="ease", config=cfg, workdir=workdir, mesh=mesh)
    run = np.load(f"{workdir}/per_user_test.npz")
    reference = experiment.evaluate_model(plain["ease"], full, "test")
    out["run/test"] = {k: [run[k].tolist(), reference[k].tolist()] for k in reference}
    model = np.load(f"{workdir}/model.npz")["W"]
    out["run/model_equal"] = bool(np.array_equal(model, plain["ease"]))
    return out


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    split = tiny_split()
    checks = {**step_checks(split.train), **run_checks(split, sys.argv[1])}
    checks.update(eval_checks(), ease=ease_checks(split, f"{sys.argv[1]}/ease"))
    with open(f"{sys.argv[1]}/checks.json", "w") as f:
        json.dump(checks, f)
