"""Group DRO over user-activity groups as an adversary of the paper's descent–ascent step.

Users are grouped by activity: with θ_u the number of training items of user u and
G groups, the edges are the G − 1 quantiles e_k = quantile(θ, k/G), k = 1..G−1, of the
training users' θ (NumPy's default linear interpolation), and user u is in group
g(u) = #{k: e_k <= θ_u} (so equal θ share a group; where many users tie, some groups
may be empty). The adversary is a vector of group logits t ∈ R^G, s_u = t_{g(u)}, and
its weights are the paper's per-batch normalised σ(s_u) / Σ_v σ(s_v); it ascends ARM's
objective (the adversary-weighted squared loss Σ_u w_u ‖x_u − x_u W‖² − (B/2)‖t‖²,
`adversarial.arm_objective`), so the weight moves to the groups whose users the learner
serves worst — the standard worst-group baseline (group DRO, as S-DRO uses it), in the
same `gda_step` as ARM and R-LARM. θ_u of a batch user is counted from its row in the
`SparseBatch` (the training row), so the adversary needs only the bound edges.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax.adversarial import Adversary, Model, arm_objective
from arm_jax.ease import interactions
from arm_jax.errors import ConfigError
from arm_jax.products import SparseBatch


def check_groups(groups: int, n_users: int) -> None:
    """Raises ConfigError naming --groups unless 2 <= groups <= n_users (an integer)."""
    if int(groups) != groups or not 2 <= groups <= n_users:
        raise ConfigError(
            f"--groups must be an integer in [2, {n_users}] (the training users), got {groups}"
        )


def activity_edges(x: sp.csr_matrix, groups: int) -> np.ndarray:
    """`[groups − 1]` float64 quantile edges of the rows' item counts θ (module docstring)."""
    x = interactions(x)
    check_groups(groups, x.shape[0])
    theta = np.diff(x.indptr).astype(np.float64)
    return np.quantile(theta, np.arange(1, groups) / groups)


def activity_groups(counts, edges) -> np.ndarray:
    """Group of each user from its item count: #{k: edges_k <= count}; `[m]` ints."""
    return np.searchsorted(np.asarray(edges), np.asarray(counts), side="right")


def row_counts(batch: SparseBatch) -> jax.Array:
    """`[b]` number of nonzero entries of each batch row (padding entries hold 0)."""
    nonzero = (jnp.asarray(batch.vals) != 0).astype(jnp.float32)
    return jax.ops.segment_sum(nonzero, batch.rows, num_segments=batch.n_users)


def group_adversary(edges) -> Adversary:
    """The group-logit adversary for `edges: [G − 1]`: params {"logits": [G]}, zeros."""
    edges = np.asarray(edges, dtype=np.float32)
    n_groups = edges.size + 1

    def init(key, n_items, config=None):
        del key, n_items, config  # uniform weights at the start, as EASE
        return {"logits": jnp.zeros((n_groups,), jnp.float32)}

    def apply(params, batch):
        group = jnp.searchsorted(jnp.asarray(edges), row_counts(batch), side="right")
        return params["logits"][group]

    return Adversary(init, apply)


def group_dro_model(x: sp.csr_matrix, groups: int) -> Model:
    """`adversarial.Model` of group DRO on `x`'s activity groups (ARM's objective)."""
    return Model(group_adversary(activity_edges(x, groups)), arm_objective)
