"""train_adversarial: early stopping, checkpoints, kill-and-resume, errors."""

import dataclasses
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import adversarial as adv
from arm_jax import configs, products, training
from arm_jax.errors import ConfigError


def _split(seed=0, m=60, n=30, h=12):
    rng = np.random.default_rng(seed)

    def rows(k):
        x = (rng.random((k, n)) < 0.2).astype(np.float32)
        x[np.arange(k), rng.integers(0, n, k)] = 1.0
        return sp.csr_matrix(x)

    valid = rows(h).toarray()
    mask = rng.random(valid.shape) < 0.7
    return types.SimpleNamespace(
        train=rows(m),
        valid_tr=sp.csr_matrix(valid * mask),
        valid_te=sp.csr_matrix(valid * ~mask),
        dataset="random",
    )


def _config(**kw):
    base = dict(C=0.01, B=1.0, learning_rate=1e-2, batch_size=16, max_epochs=4, patience=10)
    return configs.model_config("synthetic", "rlarm", **{**base, **kw})


class _Kill(Exception):
    pass


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    split, config = _split(), _config()
    full = training.train_adversarial(
        split, model="rlarm_nn", config=config, seed=3, workdir=str(tmp_path / "a")
    )

    def kill_after_two(record):
        if record["epoch"] == 2:
            raise _Kill

    work = str(tmp_path / "b")
    with pytest.raises(_Kill):
        training.train_adversarial(
            split,
            model="rlarm_nn",
            config=config,
            seed=3,
            workdir=work,
            callback=kill_after_two,
            checkpoint_every=1,  # resumes from epoch 2 (test_checkpoints.py tries others)
        )
    resumed = training.train_adversarial(
        split, model="rlarm_nn", config=config, seed=3, workdir=work, resume=True
    )
    assert len(full.history) == len(resumed.history) == 4
    for a, b in zip(full.history, resumed.history):
        assert a["learner_loss"] == b["learner_loss"]
        assert a["valid_ndcg@100"] == b["valid_ndcg@100"]
    np.testing.assert_array_equal(np.asarray(full.learner), np.asarray(resumed.learner))
    jax.tree_util.tree_map(np.testing.assert_array_equal, full.adversary, resumed.adversary)
    with open(os.path.join(work, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]


def test_result_is_the_best_epoch_and_scores_cover_training_users(tmp_path):
    split = _split(1)
    result = training.train_adversarial(split, model="rlarm", config=_config(), seed=0)
    ndcgs = [r["valid_ndcg@100"] for r in result.history]
    assert result.best_epoch == int(np.argmax(ndcgs)) + 1
    assert result.best_ndcg == pytest.approx(max(ndcgs))
    assert result.stop_reason == "max_epochs"
    assert np.all(np.diag(np.asarray(result.learner)) == 0)
    scores = training.adversary_scores(result, split.train, chunk_size=25)
    assert scores.shape == (60,) and np.isfinite(scores).all()
    direct = adv.adversary_scores(result.adversary_apply, result.adversary, split.train)
    np.testing.assert_allclose(scores, direct, rtol=1e-6)
    assert result.history[0]["adversary_steps"] == 0  # warm-up epoch
    assert result.history[1]["adversary_steps"] == 60 // 16


def test_patience_stops_early():
    config = _config(learning_rate=1e-7, max_epochs=20, patience=2)
    result = training.train_adversarial(_split(2), model="arm", config=config, seed=0)
    assert result.stop_reason == "patience"
    assert len(result.history) == result.best_epoch + 2


def test_non_finite_loss_stops_and_keeps_the_best_state(tmp_path):
    def nan_objective(params, apply, batch, x, scores, *, B):
        return adv.arm_objective(params, apply, batch, x, scores, B=B) * jnp.nan

    model = adv.Model(adv.LINEAR_ADVERSARY, nan_objective)
    result = training.train_adversarial(
        _split(3),
        model="arm",
        config=_config(),
        seed=0,
        workdir=str(tmp_path),
        adversarial_model=model,
    )
    assert result.stop_reason.startswith("non-finite loss in epoch 2")
    assert result.best_epoch == 1
    assert np.isfinite(np.asarray(result.learner)).all()
    with open(tmp_path / "metrics.jsonl") as f:
        last = json.loads(f.readlines()[-1])
    assert last["stop_reason"].startswith("non-finite")


def test_bad_inputs_raise_config_errors(tmp_path):
    split = _split(4)
    with pytest.raises(ConfigError, match="batch_size"):
        training.train_adversarial(split, model="rlarm", config=_config(batch_size=61))
    with pytest.raises(ConfigError, match="unknown adversarial model"):
        training.train_adversarial(split, model="ease", config=_config())
    work = str(tmp_path)
    training.train_adversarial(split, model="rlarm", config=_config(max_epochs=1), workdir=work)
    with pytest.raises(ConfigError, match="already holds a run"):
        training.train_adversarial(split, model="rlarm", config=_config(max_epochs=1), workdir=work)
    other = dataclasses.replace(_config(max_epochs=1), B=2.0)
    with pytest.raises(ConfigError, match="different run"):
        training.train_adversarial(split, model="rlarm", config=other, workdir=work, resume=True)


def test_nnz_cap_bounds_batches():
    x = _split(5, m=200).train
    cap = training.nnz_cap(x, 16)
    counts = np.diff(x.indptr)
    rng = np.random.default_rng(0)
    sums = [counts[rng.permutation(200)[:16]].sum() for _ in range(200)]
    assert max(sums) <= cap <= np.sort(counts)[::-1][:16].sum()


def test_warm_start_begins_at_the_ease_fixed_point():
    from arm_jax.ease import fit_ease

    split = _split(6)
    config = _config(warm_start=True, learning_rate=1e-9, max_epochs=1)
    result = training.train_adversarial(split, model="rlarm", config=config, seed=0)
    expected = np.asarray(fit_ease(split.train, C=config.C / 2))
    np.testing.assert_allclose(np.asarray(result.learner), expected, atol=1e-5)


def test_resume_may_extend_max_epochs(tmp_path):
    split, work = _split(7), str(tmp_path)
    training.train_adversarial(split, model="arm", config=_config(max_epochs=1), workdir=work)
    more = training.train_adversarial(
        split, model="arm", config=_config(max_epochs=2), workdir=work, resume=True
    )
    assert [r["epoch"] for r in more.history] == [1, 2]
    # ... but not shrink it below the epochs trained: the best epoch could lie beyond it.
    with pytest.raises(ConfigError, match="has trained 2 epochs, more than --max_epochs=1"):
        training.train_adversarial(
            split, model="arm", config=_config(max_epochs=1), workdir=work, resume=True
        )


def test_train_benchmark_smoke():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "launch"))
    import _bench_train

    x = _split(8, m=80, n=40).train
    row = _bench_train.run_train_benchmark(
        "tiny", x, products=["dense", "sparse", "segment"], steps=1, batch_size=16, parts=True
    )
    assert row["sparse_steps_per_epoch"] == 5 and row["sparse_finite"] and row["dense_finite"]
    for p in ("dense", "sparse", "segment"):
        for part in ("learner_step_s", "forward_s", "rank_loss_s", "adam_s"):
            assert row[f"{p}_{part}"] > 0, (p, part)


def test_sparse_validation_scores_match_the_dense_product():
    from arm_jax import ease, metrics

    rng = np.random.default_rng(9)
    w = jnp.asarray(rng.normal(size=(30, 30)).astype(np.float32))
    light = (rng.random((7, 30)) < 0.2).astype(np.float32)
    heavy = np.ones((2, 30), np.float32)  # over 32 items per user: the matmul fallback
    for x in (light, heavy):
        got = products.predict_sparse(w, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(got), x @ np.asarray(w), rtol=1e-5, atol=1e-5)
    split = _split(10)
    a = metrics.evaluate(products.predict_sparse, w, split.valid_tr, split.valid_te)
    b = metrics.evaluate(ease.predict, w, split.valid_tr, split.valid_te)
    np.testing.assert_allclose(a["ndcg@100"], b["ndcg@100"], rtol=1e-5, atol=1e-6)


def test_epoch_learner_loss_adds_the_regulariser_of_the_last_W():
    config = _config(max_epochs=1, C=0.5)
    result = training.train_adversarial(_split(), model="rlarm", config=config, seed=1)
    (record,) = result.history
    W = np.asarray(result.learner, np.float64)  # one epoch: the best is the last W
    expected = record["data_loss"] + 0.25 * np.sum(W**2)
    np.testing.assert_allclose(record["learner_loss"], expected, rtol=1e-5)
    assert 0 < record["data_loss"] < record["learner_loss"]
