"""The loop in pieces and its orbax checkpoints: same numbers as `train_adversarial`,
resume bit for bit, checkpoint_every, old and damaged checkpoints, leftover temporaries."""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_training import _config, _Kill, _split  # the tiny random split and config

import arm_jax
from arm_jax import adversarial, checkpoints, gda, loop, training
from arm_jax.errors import ConfigError
from arm_jax.products import make_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kill_at(epoch):
    def callback(record):
        if record["epoch"] == epoch:
            raise _Kill

    return callback


def _train(split, workdir=None, **kw):
    kw = {"model": "rlarm_nn", "config": _config(), "seed": 3, **kw}
    return training.train_adversarial(split, workdir=workdir, **kw)


def test_epoch_batches_are_the_permutation_and_grow_the_cap_like_the_old_loop():
    x = _split(11, m=100, n=40).train
    cap = 64  # far below a batch's nonzeros: it grows
    batches = loop.epoch_batches(x, seed=5, epoch=2, batch_size=16, nnz_cap=cap)
    perm = np.random.default_rng([5, 2]).permutation(100)
    assert len(batches) == 100 // 16
    for i, batch in enumerate(batches):  # the inline loop of arm_jax 0.1.0
        users = perm[i * 16 : (i + 1) * 16]
        nnz = int(x.indptr[users + 1].sum() - x.indptr[users].sum())
        if nnz > cap:
            cap = int(np.ceil(nnz * 1.1 / 512) * 512)
        expected = make_batch(x, users, cap)
        for name in ("rows", "cols", "vals", "nnz"):
            np.testing.assert_array_equal(getattr(batch, name), getattr(expected, name))
    assert batches.nnz_cap == cap > 64


def test_early_stopping_counts_epochs_without_a_better_metric():
    stop = loop.EarlyStopping(patience=2)
    for epoch, metric in enumerate([0.3, 0.5, 0.4, float("nan"), 0.6], start=1):
        stop = stop.update(metric, epoch=epoch)
        if epoch == 2:
            assert stop.has_improved and stop.best_epoch == 2
        if epoch == 4:
            assert stop.should_stop and not stop.has_improved and stop.bad_epochs == 2
    assert stop.best_metric == 0.6 and stop.best_epoch == 5 and not stop.should_stop


def test_the_pieces_by_hand_give_train_adversarial_numbers():
    split, config = _split(), _config(max_epochs=2)
    result = _train(split, config=config)
    spec = adversarial.make_model("rlarm_nn")
    x = split.train.astype(np.float32)
    init_key, step_root = jax.random.split(jax.random.PRNGKey(3))
    state = gda.init_state(init_key, x.shape[1], adversary=spec.adversary, config=config)
    step = gda.make_step(spec, config, warmup_steps=config.warmup_epochs * (60 // 16))
    cap = arm_jax.nnz_cap(x, config.batch_size)
    for epoch in range(2):
        batches = arm_jax.epoch_batches(
            x, seed=3, epoch=epoch, batch_size=config.batch_size, nnz_cap=cap
        )
        cap = batches.nnz_cap
        state, record = arm_jax.train_epoch(
            step, state, batches, step_root=step_root, epoch=epoch, C=config.C
        )
        valid = arm_jax.evaluate_learner(training.learner_of(state), split)
        assert record["learner_loss"] == result.history[epoch]["learner_loss"]
        assert record["weight_ess"] == result.history[epoch]["weight_ess"]
        assert valid["valid_ndcg@100"] == result.history[epoch]["valid_ndcg@100"]


def test_the_callback_gets_the_state_and_one_argument_callbacks_still_work():
    seen = []
    _train(_split(), config=_config(max_epochs=2), callback=lambda r, s: seen.append(int(s.step)))
    assert seen == [60 // 16, 2 * (60 // 16)]
    records = []
    _train(_split(), config=_config(max_epochs=1), callback=records.append)
    assert [r["epoch"] for r in records] == [1]


@pytest.fixture(scope="module")
def five_epochs():
    """The uninterrupted 5-epoch run that each kill-and-resume is compared with."""
    return _train(_split(), config=_config(max_epochs=5))


@pytest.mark.parametrize("every, kill", [(1, 2), (2, 3), (3, 2)])
def test_kill_and_resume_is_bit_for_bit_whatever_checkpoint_every(
    tmp_path, every, kill, five_epochs
):
    split, config, full = _split(), _config(max_epochs=5), five_epochs
    work = str(tmp_path / "run")
    with pytest.raises(_Kill):
        _train(split, work, config=config, checkpoint_every=every, callback=_kill_at(kill))
    resumed = _train(split, work, config=config, checkpoint_every=every, resume=True)
    assert [r["learner_loss"] for r in resumed.history] == [r["learner_loss"] for r in full.history]
    assert resumed.best_epoch == full.best_epoch
    np.testing.assert_array_equal(np.asarray(full.learner), np.asarray(resumed.learner))
    jax.tree_util.tree_map(np.testing.assert_array_equal, full.adversary, resumed.adversary)
    with open(os.path.join(work, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3, 4, 5]
    # What stays: the last epoch's state, and the best epoch's learner and adversary.
    assert os.listdir(os.path.join(work, "checkpoints", "latest")) == ["5"]
    assert os.listdir(os.path.join(work, "checkpoints", "best")) == [str(full.best_epoch)]


def test_checkpoint_every_is_honoured_and_best_is_written_only_when_it_improves(
    tmp_path, monkeypatch
):
    saved = {"latest": [], "best": []}
    bests_on_disk = []  # after each best is written
    for kind in saved:
        method = getattr(checkpoints.Checkpointer, f"save_{kind}")

        def spy(self, epoch, *args, _method=method, _kind=kind):
            saved[_kind].append(epoch)
            out = _method(self, epoch, *args)
            if _kind == "best":
                folder = os.path.join(str(tmp_path), "checkpoints", "best")
                bests_on_disk.append(sorted(int(d) for d in os.listdir(folder) if d.isdigit()))
            return out

        monkeypatch.setattr(checkpoints.Checkpointer, f"save_{kind}", spy)
    config = _config(max_epochs=7)
    result = _train(_split(), str(tmp_path), config=config, checkpoint_every=3)
    assert saved["latest"] == [3, 6, 7]  # and the last epoch
    improved = [r["epoch"] for r in result.history if r["best_epoch"] == r["epoch"]]
    assert saved["best"] == improved and len(improved) < 7
    # The newest best, and the one the written `latest` names (none before epoch 3).
    latest_best = {3: result.history[2]["best_epoch"], 6: result.history[5]["best_epoch"]}
    for epoch, on_disk in zip(improved, bests_on_disk):
        named = [b for e, b in latest_best.items() if e < epoch][-1:]
        assert on_disk == sorted({epoch, *named}), (epoch, on_disk)
    with pytest.raises(ConfigError, match="checkpoint_every must be an integer >= 1, got 0"):
        _train(_split(), str(tmp_path / "other"), checkpoint_every=0)
    assert not os.path.exists(tmp_path / "other")


def test_a_workdir_with_an_old_npz_checkpoint_is_refused_in_one_line(tmp_path):
    work = tmp_path / "old"
    work.mkdir()
    np.savez(work / "latest.npz", x=np.zeros(2))
    message = (
        r"holds a checkpoint of an older arm_jax \(latest.npz\); resume it with "
        r"arm_jax <= 0.1.0 or use a new workdir"
    )
    for resume in (False, True):
        with pytest.raises(ConfigError, match=message):
            _train(_split(), str(work), resume=resume)
    assert sorted(os.listdir(work)) == ["latest.npz"]


def _damage(path, how):
    data = open(path, "rb").read()
    if how == "zero":
        data = b""
    elif how == "truncate":
        data = data[: len(data) // 2]
    else:  # one flipped bit in the middle
        data = bytearray(data)
        data[len(data) // 2] ^= 0x10
        data = bytes(data)
    with open(path, "wb") as f:
        f.write(data)


def _largest_array_file(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "tree", "**"), recursive=True)]
    files = [f for f in files if os.path.isfile(f) and "/d/" in f]
    return max(files, key=os.path.getsize)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A workdir of 2 epochs with a checkpoint each; a copy of it resumes as it does."""
    work = tmp_path_factory.mktemp("two_epochs") / "run"
    _train(_split(), str(work), config=_config(max_epochs=2), checkpoint_every=1)
    copy = str(tmp_path_factory.mktemp("copy") / "run")
    shutil.copytree(work, copy)
    more = _train(_split(), copy, config=_config(max_epochs=3), checkpoint_every=1, resume=True)
    assert [r["epoch"] for r in more.history] == [1, 2, 3]
    return work


@pytest.mark.parametrize("how", ["zero", "truncate", "flip"])
@pytest.mark.parametrize("what", ["state", "meta", "best"])
def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, how, what, two_epochs):
    split = _split()
    work = str(tmp_path / "run")
    shutil.copytree(two_epochs, work)  # the same files as a 2-epoch run into `work`
    latest = os.path.join(work, "checkpoints", "latest", "2")
    if what == "state":
        _damage(_largest_array_file(latest), how)
    elif what == "meta":
        _damage(os.path.join(latest, "meta", "metadata"), how)
    else:
        (best,) = glob.glob(os.path.join(work, "checkpoints", "best", "*"))
        _damage(_largest_array_file(best), how)
    more = _config(max_epochs=3)
    with pytest.raises(ConfigError, match="the checkpoint is damaged") as e:
        _train(split, work, config=more, checkpoint_every=1, resume=True)
    assert "\n" not in str(e.value) and "start over" in str(e.value)


def test_tree_checksum_sees_one_changed_bit():
    tree = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.int32(7)}
    assert checkpoints.tree_checksum(tree) == checkpoints.tree_checksum(dict(tree))
    flipped = tree["w"].copy()
    flipped.view(np.uint32)[1, 2] ^= 1
    assert checkpoints.tree_checksum({**tree, "w": flipped}) != checkpoints.tree_checksum(tree)


def test_tree_checksum_is_the_same_on_host_and_device_without_moving_leaves(monkeypatch):
    rng = np.random.default_rng(4)
    tree = {
        "w": rng.normal(size=(37, 29)).astype(np.float32),
        "k": np.int32(-3),
        "m": rng.random(9) < 0.5,
        "h": rng.normal(size=5).astype(np.float16),
    }
    monkeypatch.setattr(checkpoints, "_HOST_CHUNK", 100)  # several blocks and a tail
    host = checkpoints.tree_checksum(tree)
    on_device = jax.tree_util.tree_map(jax.numpy.asarray, tree)
    assert checkpoints.tree_checksum(on_device) == host
    flipped = tree["w"].copy()
    flipped.view(np.uint8)[20, 3] ^= 0x10  # one byte, past the first block
    assert checkpoints.tree_checksum({**tree, "w": flipped}) != host
    assert checkpoints.tree_checksum({**on_device, "w": jax.numpy.asarray(flipped)}) != host
    moved = []  # host leaves are summed on the host: none goes to the device
    monkeypatch.setattr(checkpoints, "_device_sums", lambda leaves: moved.extend(leaves) or [])
    checkpoints.tree_checksum(tree)
    assert moved == []


@pytest.mark.parametrize("resume", [False, True])
def test_leftover_temporaries_of_a_killed_write_are_removed(tmp_path, resume):
    split, work = _split(), str(tmp_path)
    with pytest.raises(_Kill):
        _train(split, work, config=_config(max_epochs=3), checkpoint_every=1, callback=_kill_at(2))
    if not resume:  # a fresh run into the workdir: the killed run's checkpoints go too
        for kind in ("latest", "best"):
            for step in glob.glob(os.path.join(work, "checkpoints", kind, "[0-9]*")):
                __import__("shutil").rmtree(step)
    # What a kill during a write leaves: orbax's temporary step folders, and the
    # temporary files of arm_jax 0.1.0's .npz writes.
    left = [
        os.path.join(work, "checkpoints", "latest", "3.orbax-checkpoint-tmp-1700000000"),
        os.path.join(work, "checkpoints", "best", "3.orbax-checkpoint-tmp-1700000001"),
    ]
    for folder in left:
        os.makedirs(os.path.join(folder, "tree"))
        open(os.path.join(folder, "tree", "part"), "wb").write(b"\0" * 1000)
    old_tmp = os.path.join(work, ".latest.npz.1234.abcdef.tmp")
    open(old_tmp, "wb").write(b"\0" * 1000)
    _train(split, work, config=_config(max_epochs=3), checkpoint_every=1, resume=resume)
    assert not any(os.path.exists(p) for p in [*left, old_tmp])
    assert sorted(os.listdir(os.path.join(work, "checkpoints", "latest"))) == ["3"]


def test_cli_old_and_damaged_checkpoints_are_one_line_errors(tmp_path):
    def train(*args):
        env = dict(os.environ, ARM_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
        script = os.path.join(ROOT, "launch", "train.py")
        return subprocess.run(
            [sys.executable, script, "--model=arm", "--workdir=run", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
        )  # fmt: skip

    out = train("--max_epochs=2", "--checkpoint_every=1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.listdir(tmp_path / "run" / "checkpoints" / "latest") == ["2"]
    _damage(os.path.join(tmp_path, "run", "checkpoints", "latest", "2", "meta", "metadata"), "flip")
    out = train("--max_epochs=3", "--resume")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "the checkpoint is damaged" in out.stderr
    np.savez(tmp_path / "run" / "best.npz", x=np.zeros(1))
    out = train("--max_epochs=3", "--resume")
    assert out.returncode == 1 and "older arm_jax (best.npz)" in out.stderr
    assert out.stderr.count("\n") == 1


def test_saves_write_small_data_files_and_restore_the_same_bits(tmp_path, monkeypatch):
    # Small OCDBT data files are what keeps a save from holding a second copy of W.
    monkeypatch.setattr(checkpoints, "_DATA_FILE_BYTES", 2**20)
    rng = np.random.default_rng(0)
    tree = {"W": jax.numpy.asarray(rng.standard_normal((1024, 1024), np.float32))}
    with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save_latest(1, tree, {"epoch": 1})
        restored, meta = ckpt.restore_latest(tree)
    assert np.asarray(restored["W"]).tobytes() == np.asarray(tree["W"]).tobytes()
    data = [
        os.path.getsize(f)
        for f in glob.glob(str(tmp_path / "checkpoints/latest/1/tree/**/d/*"), recursive=True)
    ]
    assert len(data) >= 4 and max(data) <= 2 * 2**20  # 4 MiB of W in files of about 1 MiB
