"""R-LARM step and epoch timings with the dense and the sparse `x_u W` product.

Each product gets a fresh train state (Glorot W, linear adversary, the adversary active
from step 0 so every step does the full descent–ascent work), one compiling step, then
`steps` timed steps on fresh batches of the paper's size (1024 users; 8192 from 200k
users up, as the paper's MSD runs), then as many with the adversary held
(`learner_step_s`: the descent alone; the rest of a step is the ascent). Seconds per
epoch are extrapolated: s/step × floor(m / b). Peak device memory comes from the
device's `memory_stats()` where it has them (GPUs), peak host RSS otherwise. With
`parts`, three parts of a step are also timed, each jitted alone (`time_parts`), to show
where a step's time goes.

  python launch/_bench_train.py amazon-book-shape sparse,dense 5   # standalone
"""

import contextlib
import dataclasses
import functools
import resource
import sys
import time

import jax
import numpy as np
import optax
import scipy.sparse as sp

from arm_jax import adversarial, configs, gda, loop, sharding
from arm_jax.products import batch_product, densify, make_batch, resolve_product

SHAPES = {  # (users, items, nonzeros) of the training matrices
    "amazon-book-shape": (56_543, 24_915, 522_000),
    "ml-20m-shape": (116_677, 20_108, 8_000_000),
    "msd-shape": (471_355, 41_140, 26_000_000),
}


def _peak_memory_gib() -> dict:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"peak_device_gib": None if peak is None else peak / 2**30, "peak_host_gib": host}


def _per_device_bytes(state) -> dict:
    """Bytes of the train state on each device, from its arrays' shards: the layout's
    figure where a device has no `memory_stats()` (CPUs)."""
    held = {}
    for leaf in jax.tree_util.tree_leaves(state):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return {"state_bytes_per_device": max(held.values()), "devices_holding": len(held)}


def _step_memory(spec, config, state, batch, mesh) -> dict:
    """The compiled step's own account of one device's memory (XLA's memory analysis:
    arguments, outputs, temporaries), with or without a mesh."""
    step = functools.partial(
        gda.gda_step, model=spec, C=config.C, B=config.B,
        product=resolve_product(config.product), warmup_steps=0,
    )  # fmt: skip
    if mesh is None:
        jitted = jax.jit(step, donate_argnums=0)
    else:
        s, rep = sharding.state_shardings(mesh, state), sharding.replicated(mesh)
        jitted = jax.jit(step, donate_argnums=0, in_shardings=(s, rep, rep), out_shardings=(s, rep))
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        stats = jitted.lower(state, batch, jax.random.PRNGKey(0)).compile().memory_analysis()
    if stats is None:
        return {}
    return {
        "step_argument_bytes": stats.argument_size_in_bytes,
        "step_temp_bytes": stats.temp_size_in_bytes,
        "step_output_bytes": stats.output_size_in_bytes,
        "step_alias_bytes": stats.alias_size_in_bytes,
    }


def time_steps(
    x: sp.csr_matrix, *, product: str, steps: int, batch_size: int, model="rlarm", mesh=None
):
    """Compiles then times `steps` gda steps, then as many descent-only steps (the
    adversary held: `learner_step_s`; the difference is the ascent); returns seconds.

    The steps are the library's loop (`loop.epoch_batches`, `loop.train_epoch`) cut to
    `steps` batches an epoch; `train_epoch` waits for its steps before it returns.
    """
    m, n = x.shape
    config = configs.model_config("ml-20m", model, batch_size=batch_size, product=product)
    spec = adversarial.make_model(model)
    start = time.perf_counter()
    state = gda.init_state(
        jax.random.PRNGKey(0), n, adversary=spec.adversary, config=config, mesh=mesh
    )
    jax.block_until_ready(state)
    init_s = time.perf_counter() - start
    memory = _per_device_bytes(state)
    cap = loop.nnz_cap(x, batch_size)
    batch = next(iter(loop.epoch_batches(x, seed=0, epoch=0, batch_size=batch_size, nnz_cap=cap)))
    memory.update(_step_memory(spec, config, state, batch, mesh))
    count = min(steps, m // batch_size)

    def epoch(step, state, e, k):
        batches = loop.epoch_batches(x, seed=0, epoch=e, batch_size=batch_size, nnz_cap=cap)
        batches = dataclasses.replace(
            batches, users=batches.users[:k], nnz_caps=batches.nnz_caps[:k]
        )
        root = jax.random.PRNGKey(1)
        return loop.train_epoch(step, state, batches, step_root=root, epoch=e, C=config.C)

    step = gda.make_step(spec, config, warmup_steps=0, mesh=mesh)
    state, first = epoch(step, state, 0, 1)  # compiles
    state, timed = epoch(step, state, 1, count)
    # The same steps with the adversary held (descent only): the rest is the ascent.
    learner_step = gda.make_step(spec, config, warmup_steps=2**30, mesh=mesh)
    state, _ = epoch(learner_step, state, 2, 1)  # compiles
    state, learner = epoch(learner_step, state, 3, count)
    del state
    per_step = timed["step_seconds"] / count
    return {
        "init_s": init_s,
        "first_step_s": first["step_seconds"],
        "step_s": per_step,
        "learner_step_s": learner["step_seconds"] / count,
        "epoch_s_extrapolated": per_step * (m // batch_size),
        "steps_per_epoch": m // batch_size,
        "timed_steps": count,
        "finite": bool(np.isfinite(timed["data_loss"])),
        **memory,
    }


def _timed(call, count: int):
    """(seconds of `call(0)`, which compiles; seconds a call of the next `count`; the
    last output). Dispatch is asynchronous: one wait after each phase."""
    start = time.perf_counter()
    out = jax.block_until_ready(call(0))
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(1, count + 1):
        out = call(i)
    jax.block_until_ready(out)
    return first_s, (time.perf_counter() - start) / max(count, 1), out


def time_parts(x: sp.csr_matrix, *, product: str, steps: int, batch_size: int) -> dict:
    """Seconds of three parts of an R-LARM step, each jitted alone.

    `forward_s`: the scores `x_u W` of a batch (the ascent computes them once; the
    descent's loss once more, with its transpose for the gradient); `rank_loss_s`: 1 −
    NDCG@100 of those scores (`rank_loss_sparse`); `adam_s`: the learner's Adam update of
    the `[n, n]` W from a given gradient (three `[n, n]` reads, three writes, at least).
    Inside the step the compiler fuses across these parts, so they are indications.
    """
    m, n = x.shape
    product = resolve_product(product)
    config = configs.model_config("ml-20m", "rlarm", batch_size=batch_size, product=product)
    spec = adversarial.make_model("rlarm")
    state = gda.init_state(jax.random.PRNGKey(0), n, adversary=spec.adversary, config=config)
    rng = np.random.default_rng(1)
    cap = loop.nnz_cap(x, batch_size)
    batches = [make_batch(x, rng.permutation(m)[:batch_size], cap) for _ in range(4)]

    @jax.jit
    def forward(w, batch):
        xd = densify(batch, w.dtype)  # dropped by the compiler where the product needs none
        return batch_product(w, batch, xd, product=product, zero_diagonal=True)

    W = state.params["W"]
    out = {"forward_s": _timed(lambda i: forward(W, batches[i % 4]), steps)[1]}
    scores = [forward(W, b) for b in batches]
    rank = jax.jit(adversarial.rank_loss_sparse)
    out["rank_loss_s"] = _timed(lambda i: rank(scores[i % 4], batches[i % 4]), steps)[1]
    scores.clear()  # free them before the Adam timing

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def adam(params, opt_state, grads):
        updates, opt_state = state.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    grads = {"W": W * config.C}
    carry = [state.params, state.opt_state]

    def adam_call(i):
        carry[:] = adam(*carry, grads)
        return carry

    out["adam_s"] = _timed(adam_call, steps)[1]
    return out


def run_train_benchmark(
    name: str,
    x: sp.csr_matrix,
    *,
    products=("dense", "sparse"),
    steps: int = 10,
    batch_size: int | None = None,
    model: str = "rlarm",
    parts: bool = False,
    mesh=None,
) -> dict:
    """Times R-LARM epochs with each product side by side on the training matrix `x`.

    Args:
      name: the case's name (recorded).
      x: `[m, n]` 0/1 CSR training matrix.
      products: which `x_u W` products to time ("dense", "sparse", "auto").
      steps: timed steps per product after the compiling one (the dense product on a
        CPU costs tens of seconds a step at n ≈ 25k: give it few).
      batch_size: users per batch; None: 8192 for m ≥ 200k (MSD) else 1024.
      model: "rlarm", "rlarm_nn" or "arm".
      parts: also time a step's parts (`time_parts`), after the peak memory is read.
      mesh: a `sharding.make_mesh` mesh to shard the state over (the step's memory per
        device is then XLA's per-device account), or None.

    Returns:
      One flat dict: `{product}_step_s`, `{product}_epoch_s_extrapolated`, ... per
      product, the shape, the backend and peak memory.
    """
    m, n = x.shape
    b = batch_size or (8192 if m >= 200_000 else 1024)
    row = {"data": name, "users": m, "items": n, "nnz": int(x.nnz), "batch_size": b}
    row.update(backend=jax.default_backend(), model=model, auto=resolve_product("auto"))
    row.update(mesh=None if mesh is None else dict(mesh.shape), devices=jax.device_count())
    for product in products:
        out = time_steps(x, product=product, steps=steps, batch_size=b, model=model, mesh=mesh)
        row.update({f"{product}_{k}": v for k, v in out.items()})
        row.update({f"{product}_{k}": v for k, v in _peak_memory_gib().items()})
        if parts:
            out = time_parts(x, product=product, steps=steps, batch_size=b)
            row.update({f"{product}_{k}": v for k, v in out.items()})
    return row


def synthetic_case(name: str) -> sp.csr_matrix:
    """A Zipf-like 0/1 matrix of a shape in `SHAPES`."""
    users, items, nnz = SHAPES[name]
    rng = np.random.default_rng(0)
    item_p = 1.0 / np.arange(1, items + 1) ** 0.8
    user_p = rng.lognormal(0.0, 1.0, users)
    rows = rng.choice(users, size=nnz, p=user_p / user_p.sum())
    cols = rng.choice(items, size=nnz, p=item_p / item_p.sum())
    x = sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(users, items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


if __name__ == "__main__":
    import json

    case, prods, n_steps = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    row = run_train_benchmark(case, synthetic_case(case), products=prods, steps=n_steps)
    print(json.dumps(row))
