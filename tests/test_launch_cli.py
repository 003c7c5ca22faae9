"""What a newcomer meets first in launch/: `--help` lists each script's main flags and
exits 0, flag errors come before any data is read, analyze.py has a default --outdir."""

import json
import os
import subprocess
import sys

import pytest
from _cli_batch import run_cases  # train.py and analyze.py, one interpreter each
from test_analysis import _make_workdirs  # fake model workdirs of one split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The flags a newcomer looks for first, per script (absl's own flags are under --helpfull).
MAIN_FLAGS = {
    "train.py": ["--dataset", "--data_dir", "--model", "--C", "--workdir", "--max_epochs"],
    "prepare_data.py": ["--dataset", "--data_dir", "--data_path", "--columns"],
    "sweep.py": ["--dataset", "--data_dir", "--model", "--sweep_dir", "--grid"],
    "reproduce.py": ["--dataset", "--data_dir", "--workdir", "--best"],
    "analyze.py": ["--workdirs", "--outdir"],
    "benchmark.py": ["--what", "--data"],
}
for _script in ("train.py", "sweep.py", "reproduce.py"):  # an EASE run's W as warm start
    MAIN_FLAGS[_script].append("--warm_start_from")


def _launch(script, *args, cwd=None, **env):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env)
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", script), *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("script", sorted(MAIN_FLAGS))
def test_help_lists_the_main_flags_and_exits_0(script):
    out = _launch(script, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    listed = {line.split(":")[0].strip() for line in out.stdout.splitlines()}
    for flag in MAIN_FLAGS[script]:
        assert flag in listed, f"{script} --help does not list {flag}"
    assert "--helpfull" in out.stdout  # absl's own flags stay one flag away
    assert "--jax_" not in out.stdout


UNUSED = [
    (["--model=ease", "--B=5"], "--B: not used by --model=ease"),
    (["--model=rlarm", "--hidden_dim=3"], "--hidden_dim: not used by --model=rlarm"),
]


LOG_RUN = ["--model=rlarm", "--max_epochs=2", "--workdir=r"]


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory, cli_cache):
    """train.py on a bad flag, on each row of UNUSED and on LOG_RUN, in one interpreter
    (_cli_batch); the data folder does not exist: reaching the data would be another
    error."""
    root = tmp_path_factory.mktemp("train_runs")
    missing = ["--dataset=ml-100k", f"--data_dir={root / 'no_such_folder'}", "--workdir=run"]
    argvs = [["--no_such_flag"]] + [[*missing, *args] for args, _ in UNUSED] + [LOG_RUN]
    outs = run_cases("train.py", argvs, root, ARM_JAX_CACHE=cli_cache)
    return {
        "bad_flag": outs[0],
        "log": outs[-1],
        **{tuple(args): o for (args, _), o in zip(UNUSED, outs[1:-1])},
    }


def test_a_bad_flag_still_exits_1(train_runs):
    out = train_runs["bad_flag"]
    assert out.returncode == 1 and "no_such_flag" in out.stderr


@pytest.mark.parametrize("args,message", UNUSED)
def test_unused_flag_is_refused_before_the_data_is_read(train_runs, args, message):
    out = train_runs[tuple(args)]
    assert out.returncode == 1
    assert message in out.stderr and "no_such_folder" not in out.stderr
    assert not os.path.exists(os.path.join(out.cwd, "run"))


def test_analyze_writes_beside_the_workdirs_and_shows_q_10_20_30(tmp_path):
    # Two runs in one interpreter, each in a folder of the same fake workdirs.
    cwds = [tmp_path / "a", tmp_path / "b"]
    for cwd in cwds:
        _make_workdirs(str(cwd / "runs"), models=("ease", "ease_ipw", "rlarm"))
    argvs = [["--workdirs=runs"], ["--workdirs=runs/ease,runs/rlarm", "--alpha=0.1"]]
    out, one = run_cases("analyze.py", argvs, tmp_path, cwds=cwds)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = (cwds[0] / "runs" / "analysis" / "summary.md").read_text()
    section = summary.split("bottom q% users")[1].split("##")[0]
    rows = [line for line in section.splitlines()[4:] if line.startswith("|")]
    shown = {int(line.split("|")[1]) for line in rows}
    assert shown == {10, 20, 30}
    assert "Holm-corrected over 20 tests against EASE (10 q levels × 2 models)" in section
    assert section in out.stdout
    # One model workdir given: its parent folder holds the analysis.
    assert one.returncode == 0 and "runs/analysis" in one.stdout.splitlines()[-1]


def test_compiled_programs_are_cached_unless_turned_off(tmp_path):
    out = _launch("train.py", "--workdir=a", cwd=tmp_path, ARM_JAX_CACHE=str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(os.listdir(tmp_path / "c" / "jax")) > 0
    # An EASE run records the settings it uses and the flags given, nothing else.
    with open(tmp_path / "a" / "config.json") as f:
        config = json.load(f)
    assert set(config["model_config"]) == {"C"} and config["flags"] == {"workdir": "a"}
    out = _launch(
        "train.py", "--workdir=b", "--nocompilation_cache", cwd=tmp_path,
        ARM_JAX_CACHE=str(tmp_path / "d"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "d" / "jax").exists()


def test_a_log_file_gets_one_line_per_epoch(train_runs):
    out = train_runs["log"]
    assert out.returncode == 0, out.stderr[-2000:]
    epochs = [line for line in out.stdout.splitlines() if line.startswith("epoch=")]
    assert len(epochs) == 2 and "None" not in out.stdout  # epoch 1: no adversary yet
    assert "adversary_objective=" in epochs[1] and "adversary_objective=" not in epochs[0]
    assert "it/s" not in out.stderr and "\r" not in out.stderr  # no progress bar
