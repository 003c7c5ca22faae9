"""arm_jax: adversarially reweighted recommenders (RecSys'22) as pure JAX functions.

The public API, by layer:
- data: `load_split`, `Split`, `split_stats`, `make_synthetic`;
- metrics: `ndcg_at_k`, `recall_at_k`, `evaluate`, `summarize`;
- EASE: `fit_ease`, `gram_matrix`, `ease_from_gram`, `ipw_weights`, `predict`,
  `save_model`, `load_model`;
- adversarial models: `Adversary`, `LINEAR_ADVERSARY`, `NN_ADVERSARY`,
  `adversary_weights`, `adversary_scores`, `learner_loss`, `arm_objective`,
  `rank_loss`, `rank_objective`, `Model`, `make_model`, `TrainState`, `init_state`,
  `gda_step`, `make_step`, `SparseBatch`, `make_batch`, `nnz_cap`, `train_adversarial`,
  and for writing adversaries `sparse_matmul` (a batch's rows times a narrow matrix) and
  `learner_matrix` (the dense learner's W, with its diagonal masked, from its params
  dict `{"W": W}`);
- learners: `Learner` (init, scores, loss, …), `DENSE_LEARNER` (the paper's `W: [n, n]`),
  `LOW_RANK_LEARNER` (`W = P Qᵀ` without its diagonal), `edlae_learner` (the dense W
  with EDLAE's dropout loss), `make_learner`, `low_rank_predict`, `load_learned`,
  `unit_squared_errors` (user, item or entry weights);
- item-level and user–item adversaries: `ITEM_ADVERSARY`, `USER_ITEM_ADVERSARY`,
  `entry_arm_objective`, `item_rank_objective`, `entry_rank_objective`,
  `item_hit_rate`;
- the training loop in pieces (what `train_adversarial` composes): `epoch_batches`,
  `train_epoch`, `evaluate_learner`, `EarlyStopping`, `Checkpointer` (orbax: latest and
  best state), `MetricWriter` (`metrics.jsonl`);
- several devices: `make_mesh` (a `users` × `items` mesh for the `mesh=` of
  `train_adversarial`, `run_experiment`, `init_state`, `make_step`, `evaluate`,
  `evaluate_learner`, `evaluate_model`, `fit_ease`, `gram_matrix`; see
  `arm_jax.sharding`, `arm_jax.ease_mesh`);
- experiments: `model_config`, `ModelConfig`, `run_experiment`, `evaluate_model`;
- analysis: `analyze_workdirs`, `write_report`, `overall_table`,
  `worst_users_improvement`, `loss_by_fold_in`, `group_table`, `roc_auc`, `item_auc`,
  `holm` (Holm–Bonferroni adjusted p-values);
  each model's own worst users: `cvar`, `worst_off_table`, `zero_share_table`,
  `best_rank`.
"""

__version__ = "0.2.0"

import importlib as _importlib

from arm_jax.adversarial import (
    LINEAR_ADVERSARY,
    NN_ADVERSARY,
    Adversary,
    Model,
    adversary_scores,
    adversary_weights,
    arm_objective,
    learner_loss,
    learner_matrix,
    make_model,
    rank_loss,
    rank_objective,
)
from arm_jax.checkpoints import Checkpointer, MetricWriter
from arm_jax.configs import ModelConfig, SplitOptions, model_config, split_options
from arm_jax.data import Split, load_split, make_synthetic, split_stats
from arm_jax.ease import (
    ease_from_gram,
    fit_ease,
    gram_matrix,
    ipw_weights,
    load_model,
    predict,
    save_model,
)
from arm_jax.errors import ArmJaxError, ConfigError, DataError
from arm_jax.experiment import evaluate_model, run_experiment
from arm_jax.gda import TrainState, gda_step, init_state, make_step
from arm_jax.item_adversaries import (
    ITEM_ADVERSARY,
    USER_ITEM_ADVERSARY,
    entry_arm_objective,
    entry_rank_objective,
    item_hit_rate,
    item_rank_objective,
)
from arm_jax.learners import (
    DENSE_LEARNER,
    LOW_RANK_LEARNER,
    Learner,
    edlae_learner,
    load_learned,
    low_rank_predict,
    make_learner,
    unit_squared_errors,
)
from arm_jax.loop import EarlyStopping, epoch_batches, train_epoch
from arm_jax.metrics import best_rank, evaluate, ndcg_at_k, recall_at_k, summarize
from arm_jax.products import SparseBatch, make_batch, sparse_matmul
from arm_jax.sharding import make_mesh
from arm_jax.training import evaluate_learner, nnz_cap, train_adversarial

# The analysis layer pulls in scipy.stats, pandas and matplotlib (about a second at
# import), which training never uses: its names load on first use (PEP 562).
_LAZY = {
    "analyze_workdirs": "report",
    "write_report": "report",
    "group_table": "analysis",
    "loss_by_fold_in": "analysis",
    "overall_table": "analysis",
    "roc_auc": "analysis",
    "item_auc": "analysis",
    "holm": "analysis",
    "worst_users_improvement": "analysis",
    "cvar": "worst_off",
    "worst_off_table": "worst_off",
    "zero_share_table": "worst_off",
}
_LAZY_MODULES = ("analysis", "grids", "plots", "report", "runs", "sweep", "worst_off")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return _importlib.import_module(f"arm_jax.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'arm_jax' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"arm_jax.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))


__all__ = [
    "DENSE_LEARNER",
    "LOW_RANK_LEARNER",
    "Learner",
    "load_learned",
    "low_rank_predict",
    "make_learner",
    "edlae_learner",
    "unit_squared_errors",
    "ITEM_ADVERSARY",
    "USER_ITEM_ADVERSARY",
    "entry_arm_objective",
    "entry_rank_objective",
    "item_hit_rate",
    "item_rank_objective",
    "item_auc",
    "holm",
    "LINEAR_ADVERSARY",
    "NN_ADVERSARY",
    "Adversary",
    "Model",
    "SparseBatch",
    "TrainState",
    "adversary_scores",
    "adversary_weights",
    "arm_objective",
    "gda_step",
    "init_state",
    "learner_loss",
    "learner_matrix",
    "make_batch",
    "make_mesh",
    "make_model",
    "make_step",
    "rank_loss",
    "rank_objective",
    "train_adversarial",
    "Checkpointer",
    "EarlyStopping",
    "MetricWriter",
    "epoch_batches",
    "evaluate_learner",
    "train_epoch",
    "ArmJaxError",
    "ConfigError",
    "DataError",
    "ModelConfig",
    "Split",
    "SplitOptions",
    "analyze_workdirs",
    "ease_from_gram",
    "evaluate",
    "evaluate_model",
    "fit_ease",
    "gram_matrix",
    "group_table",
    "ipw_weights",
    "load_model",
    "load_split",
    "loss_by_fold_in",
    "make_synthetic",
    "model_config",
    "ndcg_at_k",
    "nnz_cap",
    "overall_table",
    "predict",
    "recall_at_k",
    "roc_auc",
    "run_experiment",
    "save_model",
    "split_options",
    "split_stats",
    "sparse_matmul",
    "summarize",
    "worst_users_improvement",
    "write_report",
    "best_rank",
    "cvar",
    "worst_off_table",
    "zero_share_table",
]
