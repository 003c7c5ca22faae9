"""Training over a device mesh: sharded steps and runs equal single-device ones, a
sharded run resumes bit for bit, two processes over jax.distributed give the one-process
result, the sharded evaluation gives the unsharded metrics without gathering a chunk's
scores, EASE's Gram matrix is built by columns and gives the unsharded W, and bad meshes
or host flags are one-line errors.

The mesh runs need 8 devices, which a process gets only from its start
(`--xla_force_host_platform_device_count`): they run in subprocesses
(`_mesh_runs.py`, `_two_process.py`) and the tests assert on what they report.
"""

import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
from _mesh_runs import EVAL_CHUNK, EVAL_N

from arm_jax import ease, metrics, sharding
from arm_jax.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env(tmp_path, devices: int) -> dict:
    env = dict(os.environ)
    # LLVM at -O0: these many small programs compile faster, and every program the
    # checks compare is compiled alike (XLA's programs, shardings and collectives are
    # the same ones).
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    )
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    # One program compiled once per process: the runs reuse the steps' programs.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env, log):
    # Output to a file: a pipe not read while the other runs are awaited could fill.
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=out)


def _wait(process, log, timeout) -> str:
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    return text


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The 8-device checks and the two-process run, started at once (each is mostly
    one core compiling): `{"mesh": (process, folder), "two": ([processes], folder)}`."""
    mesh, two = tmp_path_factory.mktemp("mesh"), tmp_path_factory.mktemp("two")
    (mesh / "work").mkdir()
    runs = _start([os.path.join(HERE, "_mesh_runs.py"), str(mesh / "work")], _env(mesh, 8),
                  mesh / "log.txt")  # fmt: skip
    address, script = f"127.0.0.1:{_free_port()}", os.path.join(HERE, "_two_process.py")
    pair = [
        _start(
            [script, address, str(i), str(two / "work"), str(two / "out.npz")],
            _env(two / f"p{i}", 1),
            two / f"log{i}.txt",
        )
        for i in range(2)
    ]
    yield {"mesh": (runs, mesh), "two": (pair, two)}
    for p in [runs, *pair]:
        if p.poll() is None:  # a test failed before waiting on it
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def mesh_runs(launched):
    process, folder = launched["mesh"]
    _wait(process, folder / "log.txt", 900)
    out = json.loads((folder / "work" / "checks.json").read_text())
    return {**out, "work": folder / "work"}


@pytest.mark.parametrize(
    "case, columns",
    [
        ("sparse/items:8", [256, 32]),  # the CPU's product
        ("dense/users:2,items:4", [256, 64]),  # the accelerators' product, users split
    ],
)
def test_a_sharded_step_is_the_single_device_step(mesh_runs, case, columns):
    out = mesh_runs[f"step/{case}"]
    assert out["start_diff"] == 0.0  # the state created in shards is the same W
    assert out["moved"] > 1e-3  # three steps moved W: the comparison is not of starts
    assert out["diff"] <= 1e-5
    # W and its Adam moments by columns: each device holds n/d of them.
    assert out["spec"] == out["moment_spec"] == "P(None, 'items')"
    assert out["shard_shape"] == columns


def test_the_low_rank_factors_are_sharded_by_rows_and_step_the_same(mesh_runs):
    out = mesh_runs["step/low_rank/items:8"]
    assert out["moved"] > 1e-3 and out["diff"] <= 1e-5
    assert out["spec"] == out["moment_spec"] == "P('items', None)"
    assert out["shard_shape"] == [32, 8]  # [n/8, rank]


def test_a_sharded_run_gives_the_unsharded_runs_test_metrics(mesh_runs):
    plain, sharded = mesh_runs["run/plain"], mesh_runs["run/sharded"]
    for name in plain:
        np.testing.assert_allclose(sharded[name], plain[name], atol=1e-6)
    assert np.mean(plain["ndcg@100"]) > 0
    assert mesh_runs["run/learner_diff"] <= 1e-5
    assert mesh_runs["run/learner_spec"] == "P(None, 'items')"


def test_a_killed_sharded_run_resumes_to_the_uninterrupted_one(mesh_runs):
    assert mesh_runs["resume/learner_equal"]
    assert mesh_runs["resume/adversary_diff"] == 0.0
    full, resumed = mesh_runs["resume/losses"]
    assert len(full) == 3 and full == resumed
    assert mesh_runs["resume/best_epoch"][0] == mesh_runs["resume/best_epoch"][1]


@pytest.mark.parametrize(
    "case", ["real/sparse/items:8", "tied/dense/items:8", "tied/sparse/users:2,items:4"]
)
def test_the_sharded_evaluation_gives_the_unsharded_metrics_ties_included(mesh_runs, case):
    # Integer scores of a 0/1 W: a user's n = 1,024 scores take a handful of values.
    assert mesh_runs["tied_fraction"] > 0.9
    out = mesh_runs[case]
    for name in ("ndcg@100", "recall@20", "recall@50", "best_rank"):
        plain, sharded = out[name]
        assert sharded == plain, name  # exactly: the same items in the same order
    assert np.mean(out["ndcg@100"][0]) > 0 and np.mean(out["recall@50"][0]) > 0
    assert len(out["ndcg@100"][0]) > 32  # more than one (padded) chunk of 32 users
    # ‖x − xW‖² sums its n terms shard by shard: float32 rounding only.
    np.testing.assert_allclose(*out["sq_loss"][::-1], rtol=1e-5)


def test_the_sharded_evaluation_gathers_no_chunk_of_scores(mesh_runs):
    chunk = [EVAL_CHUNK, EVAL_N]  # [32, 1024], against candidates [32, 8·100]
    for product in ("sparse", "dense"):
        shapes = mesh_runs[f"gathers/sharded/{product}"]
        assert [EVAL_CHUNK, 800] in shapes  # the shards' candidates
        assert not any(s[-1] == EVAL_N for s in shapes), shapes
    # XLA alone (the program without a mesh, given W by columns) gathers the scores.
    assert chunk in mesh_runs["gathers/gspmd/dense"]


def test_ease_builds_its_gram_matrix_by_columns_and_gives_the_unsharded_w(mesh_runs):
    out = mesh_runs["ease"]
    assert out["gram_spec"] == "P(None, 'items')" and out["gram_shard"] == [256, 32]
    assert out["host_gram_spec"] == "P(None, 'items')"
    assert out["gram_equal"]  # 0/1 counts: exact
    assert out["ease/spec"] == out["ipw/spec"] == "P(None, 'items')"
    assert out["ease/equal"] and out["ease/diff"] == 0.0  # the same G, the same inverse
    # IPW's weighted G: float32 sums on the devices against the CPU's float64 product.
    assert out["ipw/gram_equal_device"] and out["ipw/diff"] <= 1e-6
    assert out["ipw/equal_auto"]  # the CPU's own product, placed by columns
    assert out["run/model_equal"]
    for name, (run, reference) in out["run/test"].items():
        if name == "sq_loss":
            np.testing.assert_allclose(run, reference, rtol=1e-5)
        else:
            assert run == reference, name


def test_two_processes_train_together_to_the_one_process_result(mesh_runs, launched):
    procs, folder = launched["two"]
    for i, p in enumerate(procs):
        _wait(p, folder / f"log{i}.txt", 600)
    two = np.load(folder / "out.npz")  # against the one-process unsharded run of `mesh_runs`
    one = np.load(mesh_runs["work"] / "plain_learner.npy")
    np.testing.assert_allclose(two["learner"], one, atol=1e-6)
    assert np.abs(one).max() > 0
    np.testing.assert_allclose(two["losses"], mesh_runs["run/plain_losses"], rtol=1e-6)
    # Each process wrote its own shards of the checkpoint; process 0 the metrics.
    tree = folder / "work" / "checkpoints" / "latest" / "3" / "tree"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(tree))
    assert len((folder / "work" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rows:8", "unknown axis 'rows'"),
        ("items", "must be NAME:SIZE"),
        ("items:0", "must be NAME:SIZE"),
        ("items:2,items:2", "once per axis"),
        ("users:2,items:x", "must be NAME:SIZE"),
    ],
)
def test_a_bad_mesh_is_a_one_line_error(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        sharding.parse_mesh(spec)
    assert "\n" not in str(e.value)


def test_a_mesh_of_the_wrong_size_or_items_it_does_not_divide_are_refused():
    with pytest.raises(ConfigError, match=r"has 2 devices but there are 1 \(cpu\)"):
        sharding.make_mesh("users:1,items:2")
    assert sharding.make_mesh(None) is None
    mesh = sharding.make_mesh("items:1")
    assert dict(mesh.shape) == {"users": 1, "items": 1}
    sharding.check_items(types.SimpleNamespace(shape={"items": 8}), 256)
    with pytest.raises(ConfigError, match="items axis \\(8\\) must divide the 30 items; .*2, 3, 5"):
        sharding.check_items(types.SimpleNamespace(shape={"items": 8}), 30)
    # The sharded evaluation and EASE's Gram matrix check it before any work.
    x = sp.csr_matrix(np.eye(30, dtype=np.float32))
    fake = types.SimpleNamespace(shape={"items": 8})
    with pytest.raises(ConfigError, match="must divide the 30 items"):
        metrics.evaluate(ease.predict, np.eye(30), x, x, mesh=fake)
    with pytest.raises(ConfigError, match="must divide the 30 items"):
        ease.gram_matrix(x, mesh=fake)


@pytest.mark.parametrize(
    "flags, message",
    [
        (("127.0.0.1:1234", None, None), "missing --num_processes, --process_id"),
        ((None, 2, 0), "missing --coordinator_address"),
        (("localhost", 2, 0), "HOST:PORT"),
        (("127.0.0.1:1234", 2, 2), r"--process_id must be in \[0, --num_processes=2\)"),
    ],
)
def test_partial_host_flags_are_refused_before_anything_starts(flags, message):
    with pytest.raises(ConfigError, match=message):
        sharding.distributed_init(*flags)
    assert sharding.check_distributed(None, None, None) is False
