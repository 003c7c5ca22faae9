"""The Colab notebooks in colabs/: committed without outputs, and each runs end to end.

Each notebook is executed with nbclient in a fresh `python3` kernel whose working directory
is a tmp_path, with `ARM_JAX_NOTEBOOK_SMALL=1` (tiny synthetic data, two epochs);
`reproduce_paper.ipynb` also gets `ARM_JAX_NOTEBOOK_DATASET=synthetic` as its stand-in for
ML-20M, which cannot be downloaded here.
"""

import importlib.util
import os

import nbformat
import pytest
from _cli_batch import fast_compile  # LLVM at -O0 for the kernels
from nbclient import NotebookClient

from arm_jax import configs

COLABS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colabs")
NOTEBOOKS = ("quickstart.ipynb", "reproduce_paper.ipynb", "custom_adversary.ipynb")
MODELS = ("ease", "ease_ipw", "arm", "rlarm", "rlarm_nn")
REPORT_FILES = ("table2.csv", "table2.md", "fig1_loss_by_fold_in.png", "fig2_worst_users.png")
needs_training = pytest.mark.skipif(
    importlib.util.find_spec("arm_jax.training") is None,
    reason="arm_jax.training (train_adversarial) is not written yet: run_experiment cannot "
    "train ARM / R-LARM / R-LARM(NN)",
)


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(COLABS, name), as_version=4)


def _execute(name: str, cwd, monkeypatch, cache: str, **env) -> nbformat.NotebookNode:
    """Runs every cell of colabs/`name` in `cwd`; raises CellExecutionError on a failure.
    The kernels share the session's compilation cache: the notebooks train the same
    models on the same small split, compiled once."""
    monkeypatch.setenv("ARM_JAX_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", cache)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    monkeypatch.setenv("XLA_FLAGS", fast_compile(os.environ.get("XLA_FLAGS")))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = _read(name)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    """Every stream and text/plain or text/markdown output of `nb`, joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/markdown", out.data.get("text/plain", "")))
    return "\n".join(parts)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )


def test_all_notebooks_present():
    found = sorted(n for n in os.listdir(COLABS) if n.endswith(".ipynb"))
    assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name} cell {i} has outputs"
        assert cell.execution_count is None, f"{name} cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_installs_and_parameters_read_the_environment(name):
    cells = [c for c in _read(name).cells if c.cell_type == "code"]
    assert "import arm_jax" in cells[0].source and "pip" in cells[0].source
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "ARM_JAX_NOTEBOOK_SMALL" in params[0].source


@needs_training
def test_quickstart_runs(tmp_path, monkeypatch, jax_cache_dir):
    nb = _execute("quickstart.ipynb", tmp_path, monkeypatch, jax_cache_dir)
    root = tmp_path / "runs" / "quickstart"
    for model in configs.MODELS:  # the paper's five and the models beyond it
        assert (root / model / "results.json").is_file(), model
    for name in (*REPORT_FILES, "groups.csv", "adversary_auc.csv", "analysis.json"):
        assert (root / "analysis" / name).is_file(), name
    text = _text(nb)
    assert "R-LARM(NN): AUC" in text
    assert f"{len(configs.MODELS)} models" in text and "highest CVaR_10: " in text
    assert "Item-R-LARM" in text  # the item adversaries' niche-item AUC table
    assert _images(nb) == 2  # Figures 1 and 2


@needs_training
def test_reproduce_paper_runs_on_a_stand_in(tmp_path, monkeypatch, jax_cache_dir):
    nb = _execute(
        "reproduce_paper.ipynb", tmp_path, monkeypatch, jax_cache_dir,
        ARM_JAX_NOTEBOOK_DATASET="synthetic",
    )  # fmt: skip
    root = tmp_path / "runs" / "synthetic"
    for model in MODELS:
        assert (root / model / "results.json").is_file()
    for name in REPORT_FILES:
        assert (root / "analysis" / name).is_file(), name
    text = _text(nb)
    assert "0.529" in text  # the paper's R-LARM(NN) Recall@50 on ML-20M, shown beside ours
    assert _images(nb) == 2


def test_custom_adversary_runs(tmp_path, monkeypatch, jax_cache_dir):
    nb = _execute("custom_adversary.ipynb", tmp_path, monkeypatch, jax_cache_dir)
    text = _text(nb)
    assert "AUC of the adversary's scores" in text
    assert "count-aware R-LARM | niche_a" in text
    assert "epoch  2" in text  # the descent-ascent loop ran with the adversary on
    assert _images(nb) == 2
