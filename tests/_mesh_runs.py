"""Sharded against single-device runs, in a process of 8 CPU devices (test_sharding.py).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_mesh_runs.py WORKDIR

Prints one JSON object of differences; the tests assert on it. Run as a script because
the pytest process has already started jax with one device.
"""

import json
import sys
import types

import jax
import numpy as np
import scipy.sparse as sp

from arm_jax import adversarial, configs, gda, learners, loop, metrics, sharding, training

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


def test_metrics(result, split) -> dict:
    per_user = metrics.evaluate(
        result.learner_predict, result.learner, split.test_tr, split.test_te
    )
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
        "run/sharded": test_metrics(sharded, split),
        "run/learner_diff": max_diff(plain.learner, sharded.learner),
        "run/learner_spec": str(sharded.learner.sharding.spec),
        "resume/learner_equal": bool(np.array_equal(sharded.learner, resumed.learner)),
        "resume/adversary_diff": max_diff(sharded.adversary, resumed.adversary),
        "resume/losses": [[r["learner_loss"] for r in h.history] for h in (sharded, resumed)],
        "resume/best_epoch": [sharded.best_epoch, resumed.best_epoch],
    }


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    split = tiny_split()
    print(json.dumps({**step_checks(split.train), **run_checks(split, sys.argv[1])}))
