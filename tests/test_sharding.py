"""Training over a device mesh: sharded steps and runs equal single-device ones, a
sharded run resumes bit for bit, two processes over jax.distributed give the one-process
result, and bad meshes or host flags are one-line errors.

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

from arm_jax import sharding
from arm_jax.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env(tmp_path, devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
    # One program compiled once per process: the runs reuse the steps' programs.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mesh")
    (tmp / "work").mkdir()
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "_mesh_runs.py"), str(tmp / "work")],
        env=_env(tmp, 8),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "work": tmp / "work"}


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_to_the_one_process_result(mesh_runs, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    script = os.path.join(HERE, "_two_process.py")
    out = tmp_path / "out.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, script, address, str(i), str(tmp_path / "work"), str(out)],
            env=_env(tmp_path / f"p{i}", 1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    two = np.load(out)  # against the one-process unsharded run of `mesh_runs`
    one = np.load(mesh_runs["work"] / "plain_learner.npy")
    np.testing.assert_allclose(two["learner"], one, atol=1e-6)
    assert np.abs(one).max() > 0
    np.testing.assert_allclose(two["losses"], mesh_runs["run/plain_losses"], rtol=1e-6)
    # Each process wrote its own shards of the checkpoint; process 0 the metrics.
    tree = tmp_path / "work" / "checkpoints" / "latest" / "3" / "tree"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(tree))
    assert len((tmp_path / "work" / "metrics.jsonl").read_text().splitlines()) == 3


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
