"""Runs a launch/ script's `main` on several command lines in one interpreter.

Each subprocess of a launch script pays the JAX and arm_jax imports (about 3 s of CPU);
the tests of refused flags need dozens of them. `run_batch` starts one interpreter per
table of command lines instead: for each it resets the flags to their defaults, moves to
the case's own working directory and runs the script as its `__main__` block does
(`_cli.run(main)`), with file descriptors 1 and 2 sent to files, so that the exit status,
stdout and stderr (print, absl logging and any traceback alike) are the process's.
"""

import json
import os
import subprocess
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fast_compile(xla_flags: str | None) -> str:
    """`xla_flags` plus LLVM at -O0 (as tests/test_sharding.py): a test run's many small
    programs compile in about three quarters of the time; XLA's programs are the same."""
    return " ".join(filter(None, [xla_flags, "--xla_backend_optimization_level=0"]))


def run_batch(script: str, argvs, root, **kw) -> dict:
    """`{tuple(argv): result}` of `run_cases` (command lines that differ)."""
    return {
        tuple(argv): result for argv, result in zip(argvs, run_cases(script, argvs, root, **kw))
    }


def run_cases(script: str, argvs, root, *, cwds=None, **env) -> list:
    """One result per command line of `argvs`, in order; each has returncode, stdout,
    stderr, started (the case's start, `time.time()`) and cwd: a new folder under `root`
    that holds nothing else, or the case's entry of `cwds` (existing folders) where given.
    The cases run one after the other: a later one sees what an earlier one wrote."""
    return finish_cases(start_cases(script, argvs, root, cwds=cwds, **env))


def start_cases(script: str, argvs, root, *, cwds=None, **env):
    """`run_cases` started, not waited for: `finish_cases` of the returned batch gives
    its results. Batches that do not read each other's files can run side by side."""
    cases = []
    for i, argv in enumerate(argvs):
        if cwds is None:
            cwd = os.path.join(str(root), f"case{i}")
            os.makedirs(cwd)
        else:
            cwd = str(cwds[i])
        cases.append({"argv": list(argv), "cwd": cwd})
    spec = os.path.join(str(root), "cases.json")
    with open(spec, "w") as f:
        json.dump(cases, f)
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env)
    env["XLA_FLAGS"] = fast_compile(env.get("XLA_FLAGS"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), os.path.join(ROOT, "launch", script), spec],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    return types.SimpleNamespace(proc=proc, cases=cases, root=str(root))


def finish_cases(batch) -> list:
    """The results of a `start_cases` batch (see `run_cases`), once its process ends."""
    try:
        _, stderr = batch.proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        batch.proc.kill()
        batch.proc.communicate()
        raise
    assert batch.proc.returncode == 0, stderr[-3000:]
    out = []
    for i, case in enumerate(batch.cases):
        with open(os.path.join(batch.root, f"case{i}.json")) as f:
            out.append(types.SimpleNamespace(cwd=case["cwd"], **json.load(f)))
    return out


def train_rows(tmp_path_factory, rows) -> dict:
    """train.py on each `(args, expected)` row's args plus `--workdir=run`, in one
    interpreter with a data cache of its own: `{tuple(args): result}` (see `run_batch`)."""
    root = tmp_path_factory.mktemp("refused")
    runs = run_batch(
        "train.py", [[*args, "--workdir=run"] for args, _ in rows], root,
        ARM_JAX_CACHE=str(root / "cache"),
    )  # fmt: skip
    return {argv[:-1]: result for argv, result in runs.items()}


def _run_case(main, argv: list, cwd: str, out_base: str) -> dict:
    """One command line, as a fresh process would run it; its status and output."""
    import time
    import traceback

    import _cli
    import jax
    from absl import flags

    flags.FLAGS.unparse_flags()  # every flag back to its default, as in a new process
    jax.config.update("jax_enable_x64", False)  # --float64 would have left it on
    sys.argv = [main.__module__ + ".py", *argv]
    os.chdir(cwd)
    started = time.time()
    saved = [os.dup(1), os.dup(2)]
    files = [open(out_base + ".out", "w+b"), open(out_base + ".err", "w+b")]
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(files[0].fileno(), 1), os.dup2(files[1].fileno(), 2)
    try:
        _cli.run(main)
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
        if not isinstance(code, int):  # sys.exit("message"): printed, status 1
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    text = []
    for f in files:
        f.seek(0)
        text.append(f.read().decode("utf-8", "replace"))
        f.close()
    return {"returncode": code, "stdout": text[0], "stderr": text[1], "started": started}


def _main(script: str, spec: str) -> None:
    import importlib

    sys.path.insert(0, os.path.dirname(script))
    main = importlib.import_module(os.path.basename(script)[: -len(".py")]).main
    with open(spec) as f:
        cases = json.load(f)
    for i, case in enumerate(cases):
        base = os.path.join(os.path.dirname(spec), f"case{i}")
        result = _run_case(main, case["argv"], case["cwd"], base)
        with open(base + ".json", "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    _main(*sys.argv[1:])
