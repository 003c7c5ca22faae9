"""The documented public API is importable from the top-level package."""

import os

import numpy as np

import arm_jax


def test_every_name_in_all_exists_and_is_documented():
    for name in arm_jax.__all__:
        obj = getattr(arm_jax, name)
        assert obj is not None, name
        if callable(obj) and not isinstance(obj, tuple):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    for name in ("fit_ease", "ndcg_at_k", "gda_step", "load_split", "run_experiment"):
        assert name in arm_jax.__all__
    for name in ("Model", "make_step", "make_batch", "nnz_cap", "init_state"):
        assert name in arm_jax.__all__  # what the README's custom-model snippet needs


def test_readme_custom_model_snippet_runs():
    """The README's `Model` / `make_step` block, run as written on a small split."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    start = readme.index("```python", readme.index("Pass your own adversary"))
    code = readme[start + len("```python") : readme.index("```", start + 3)]
    split = arm_jax.load_split("synthetic", n_users=400, n_items=60, use_cache=False)
    config = arm_jax.model_config("synthetic", "rlarm", batch_size=32)
    scope = {"arm_jax": arm_jax, "split": split, "config": config}
    exec(compile(code, "README.md", "exec"), scope)
    assert int(scope["state"].step) == 3
    assert all(np.isfinite(float(v)) for v in scope["metrics"].values())
