"""Hyperparameter grids: the default grid of a model, grid files, cells and their names.

The default grid of a model is a neighbourhood of its `configs.py` defaults:

  * learning_rate (adversarial models): the paper's {1e-5, 2e-5, 5e-5, 1e-4} (§5.1) on
    the datasets that start from the paper's values; ×{0.5, 1, 2} of the default on the
    small datasets with defaults of their own (synthetic, ml-100k, ml-latest-small),
    whose defaults lie above the paper's range;
  * C: ×{0.2, 0.5, 1, 2, 5} for EASE and EASE-IPW (closed form, cheap), ×{0.5, 1, 2} for
    the adversarial models;
  * B: ×{0.2, 0.5, 1, 2, 5};
  * β: the default ± 0.2 and ± 0.4, kept >= 0;
  * d (hidden_dim): {d/2, d, 2d}, rounded, >= 1.

A grid (a JSON file, or the JSON text itself) replaces any of these lists:
`{"C": [...], "B": [...]}` for the model swept, or `{"<model>": {"C": [...]}, ...}` with
one entry per model (a model without an entry gets its default grid). A grid may list
any hyperparameter the model uses (`configs.HYPERPARAMETERS`, e.g. batch_size); every
value is checked before anything is trained.
"""

import itertools
import json
import math

from arm_jax.configs import (
    ADVERSARIAL_MODELS,
    HYPERPARAMETERS,
    MODELS,
    REGISTRY,
    SMALL_DATASETS,
    model_config,
)
from arm_jax.errors import ConfigError
from arm_jax.io import read_json

LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4)
_WIDE = (0.2, 0.5, 1.0, 2.0, 5.0)
_NARROW = (0.5, 1.0, 2.0)
# (type, smallest value, whether the smallest is allowed) of every value a grid may list.
_KINDS = {
    "C": (float, 0.0, False),
    "B": (float, 0.0, False),
    "learning_rate": (float, 0.0, False),
    "beta": (float, 0.0, True),
    "hidden_dim": (int, 1, True),
    "batch_size": (int, 1, True),
    "warmup_epochs": (int, 0, True),
    "warm_start": (bool, None, True),
    "alpha": (float, 0.0, False),
    "rounds": (int, 1, True),
    "dropout_p": (float, 0.0, True),
    "groups": (int, 2, True),
    "cvar_loss": (str, ("squared", "rank"), True),
}
# Worst-case baselines: fixed grids of their own parameter (beside C's neighbourhood).
_OWN_GRIDS = {"alpha": [0.05, 0.1, 0.2, 0.5], "dropout_p": [0.1, 0.25, 0.5]}


def swept_parameters(model: str) -> tuple[str, ...]:
    """The hyperparameters the default grid of `model` searches (`configs.REGISTRY`)."""
    if model not in REGISTRY:
        raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    return REGISTRY[model].swept


def _neighbourhood(value: float, factors: tuple[float, ...]) -> list[float]:
    return sorted({float(f"{value * f:.6g}") for f in factors})


def default_grid(dataset: str, model: str) -> dict[str, list]:
    """The default grid of `model` on `dataset` around its `model_config` defaults."""
    config = model_config(dataset, model)
    grid: dict[str, list] = {}
    for name in swept_parameters(model):
        if name == "learning_rate":
            own = dataset in SMALL_DATASETS
            grid[name] = (
                _neighbourhood(config.learning_rate, _NARROW) if own else list(LEARNING_RATES)
            )
        elif name == "C":
            factors = _NARROW if model in ADVERSARIAL_MODELS else _WIDE
            grid[name] = _neighbourhood(config.C, factors)
        elif name == "B":
            grid[name] = _neighbourhood(config.B, _WIDE)
        elif name == "beta":
            offsets = (-0.4, -0.2, 0.0, 0.2, 0.4)
            grid[name] = sorted(
                {round(config.beta + o, 6) for o in offsets if config.beta + o >= 0}
            )
        elif name in ("alpha", "dropout_p"):
            grid[name] = list(_OWN_GRIDS[name])
        elif name == "hidden_dim":
            d = config.hidden_dim
            grid[name] = sorted({max(1, round(d / 2)), d, 2 * d})
    return grid


def _read_spec(grid: str) -> dict:
    text = grid.strip()
    try:
        spec = json.loads(text) if text.startswith("{") else read_json(grid)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--grid={grid}: not a readable JSON grid file or text ({e})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"--grid={grid}: expected a JSON object of lists")
    return spec


def _check_value(where: str, name: str, value):
    kind, low, inclusive = _KINDS[name]
    if kind is str:
        if value not in low:
            raise ConfigError(f"{where}: {name} takes one of {', '.join(low)}, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} takes true or false, got {value!r}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and not isinstance(value, int)):
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"{where}: {name} takes {expected}, got {value!r}")
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ConfigError(f"{where}: {name} must be finite and {bound}, got {value!r}")
    return kind(value)


def load_grid(grid: str | None, dataset: str, model: str) -> dict[str, list]:
    """`default_grid` with the lists of `grid` (a JSON file or JSON text) replacing it.

    Raises:
      ConfigError naming `--grid` for: unreadable JSON; per-model entries mixed with
        lists, or naming no model; a hyperparameter `model` does not use; a value that
        is not a non-empty list of distinct values of the right type and range; two
        values that would share a cell folder.
    """
    result = default_grid(dataset, model)
    if grid is None:
        return result
    where = f"--grid={grid}"
    spec = _read_spec(grid)
    sections = [k for k, v in spec.items() if isinstance(v, dict)]
    if sections:
        if len(sections) != len(spec):
            raise ConfigError(f"{where}: mixes per-model entries with lists; use one form")
        unknown = sorted(set(sections) - set(MODELS))
        if unknown:
            raise ConfigError(f"{where}: unknown model(s) {unknown}; expected {list(MODELS)}")
        spec = spec.get(model, {})
    for name, values in spec.items():
        if name not in HYPERPARAMETERS[model]:
            raise ConfigError(
                f"{where}: {model} has no hyperparameter {name!r}; it has "
                f"{', '.join(HYPERPARAMETERS[model])}"
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {name!r} must be a non-empty list, got {values!r}")
        checked = [_check_value(where, name, v) for v in values]
        folders: dict[str, object] = {}
        for value in checked:
            folder = cell_name({name: value})
            if folder in folders:
                same = "repeats" if folders[folder] == value else "shares the folder of"
                raise ConfigError(
                    f"{where}: {name}={value!r} {same} {name}={folders[folder]!r} ({folder})"
                )
            folders[folder] = value
        result[name] = checked
    return result


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Every combination of `grid`'s lists, keys in sorted order, last key fastest."""
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cell_name(params: dict) -> str:
    """A folder name for one cell, e.g. `B=2000,C=0.005,learning_rate=5e-05`."""
    return ",".join(f"{k}={_format_value(params[k])}" for k in sorted(params))
