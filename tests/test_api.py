"""The documented public API is importable from the top-level package."""

import arm_jax


def test_every_name_in_all_exists_and_is_documented():
    for name in arm_jax.__all__:
        obj = getattr(arm_jax, name)
        assert obj is not None, name
        if callable(obj) and not isinstance(obj, tuple):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    for name in ("fit_ease", "ndcg_at_k", "gda_step", "load_split", "run_experiment"):
        assert name in arm_jax.__all__
