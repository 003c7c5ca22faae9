"""The built-in `synthetic` dataset: planted user groups that average accuracy under-serves.

A majority of users has mainstream tastes: popularity-skewed choices over a large
mainstream item region with cluster structure. Each minority group (a few percent of the
users, with fewer interactions) draws most of its items from its own niche clusters and
the rest from the mainstream. Nothing but the items a user interacts with marks a group;
every interaction of a user, held out or not, comes from the same distribution; item ids
are shuffled so no id range gives a group away. A model fit for average accuracy leans on
the majority's co-occurrences and popular items, so minority users get worse rankings
simply because they are few. The group label of every user is kept through the split.
"""

import inspect

import numpy as np
import pandas as pd

from arm_jax.configs import SplitOptions
from arm_jax.data import readers
from arm_jax.data.split import Split, liang_split
from arm_jax.errors import ConfigError

GROUP_NAMES = ("majority", "niche_a", "niche_b")


def _activity(rng: np.random.Generator, n: int, median: float, cap: int) -> np.ndarray:
    """Interactions per user: 5 + a log-normal count (long-tailed, like real data)."""
    return np.minimum(5 + np.round(rng.lognormal(np.log(median), 0.7, n)), cap).astype(int)


def _cluster_popularity(rng, n_items, n_clusters, skew):
    """Cluster label and within-cluster Zipf-like popularity of each item of a region."""
    cluster = rng.permutation(np.arange(n_items) % n_clusters)
    pop = np.empty(n_items)
    for c in range(n_clusters):
        members = np.flatnonzero(cluster == c)
        pop[members] = (1.0 + rng.permutation(len(members))) ** -skew
        pop[members] /= pop[members].sum()
    return cluster, pop


def _item_regions(rng, n_items, n_groups, n_mainstream_items, n_niche, *, clusters, skews):
    """Region (0 mainstream, g niche of minority g), cluster and popularity of each item."""
    region = np.zeros(n_items, int)
    for g in range(1, n_groups):
        region[n_mainstream_items + (g - 1) * n_niche : n_mainstream_items + g * n_niche] = g
    cluster = np.zeros(n_items, int)
    within = np.zeros(n_items)
    for g in range(n_groups):
        members = np.flatnonzero(region == g)
        k, skew = (clusters[0], skews[0]) if g == 0 else (clusters[1], skews[1])
        cluster[members], within[members] = _cluster_popularity(rng, len(members), k, skew)
    return region, cluster, within


def _preferences(
    rng,
    groups,
    region,
    cluster,
    within,
    *,
    n_groups,
    clusters,
    niche_taste_concentration,
    popularity_share,
    majority_niche_share,
    minority_mainstream_share,
):
    """`[n_users, n_items]` choice probabilities: popularity and preferred clusters mixed."""
    global_pop = np.where(region == 0, within, 0.0)
    global_pop /= global_pop.sum()
    probs = np.zeros((len(groups), len(region)))
    for g in range(n_groups):
        users = np.flatnonzero(groups == g)
        k = clusters[0] if g == 0 else clusters[1]
        alpha = 0.3 if g == 0 else niche_taste_concentration
        taste = rng.dirichlet(np.full(k, alpha), size=len(users))  # [users, k]
        home = region == g
        by_cluster = np.where(home, within, 0.0)[None, :] * taste[:, np.where(home, cluster, 0)]
        by_cluster /= by_cluster.sum(axis=1, keepdims=True)
        if g == 0:
            niche = (region > 0) * within
            niche = niche / niche.sum()
            main = popularity_share * global_pop + (1 - popularity_share) * by_cluster
            probs[users] = (1 - majority_niche_share) * main + majority_niche_share * niche
        else:
            share = minority_mainstream_share
            probs[users] = share * global_pop + (1 - share) * by_cluster
    return probs


def _sample_items(rng, probs, n_u):
    """Each user's n_u items drawn from `probs: [n_users, n_items]` without replacement.

    Returns (users, items) of the rows, users in id order, each user's rows shuffled.
    """
    n_users, n_items = probs.shape
    # Never more items than a user can choose from (small n_items).
    n_u = np.minimum(n_u, np.count_nonzero(probs > 0, axis=1))
    # Sampling without replacement: the top n_u of log p + Gumbel noise per user.
    with np.errstate(divide="ignore"):
        keys = np.log(probs) + rng.gumbel(size=probs.shape)
    order = np.argsort(-keys, axis=1)
    take = np.arange(n_items)[None, :] < n_u[:, None]
    users = np.repeat(np.arange(n_users), n_u)
    items = order[take]
    # Shuffle each user's rows so file order carries no preference signal.
    items = items[np.lexsort((rng.random(len(items)), users))]
    return users, items


def _region_sizes(n_items, n_groups, n_mainstream_items, clusters) -> tuple[int, int]:
    """(mainstream items, items per niche region); too few items for the clusters is an
    error naming the sizes."""
    n_mainstream_clusters, n_niche_clusters = clusters
    if n_mainstream_items is None:
        n_mainstream_items = int(0.6 * n_items)
    n_niche = (n_items - n_mainstream_items) // max(n_groups - 1, 1)
    if n_mainstream_items < n_mainstream_clusters or (n_groups > 1 and n_niche < n_niche_clusters):
        raise ConfigError(
            f"synthetic: {n_items} items leave too few for {n_mainstream_clusters} mainstream "
            f"and {n_niche_clusters} niche clusters per minority (n_mainstream_items="
            f"{n_mainstream_items})"
        )
    return n_mainstream_items, n_niche


def make_synthetic(
    *,
    seed: int = 0,
    n_users: int = 3500,
    n_items: int = 1000,
    minority_fractions: tuple[float, ...] = (0.085, 0.085),
    n_mainstream_items: int | None = None,
    n_mainstream_clusters: int = 8,
    n_niche_clusters: int = 5,
    majority_median: float = 30.0,
    minority_median: float = 8.0,
    minority_mainstream_share: float = 0.25,
    majority_niche_share: float = 0.02,
    popularity_share: float = 0.35,
    popularity_skew: float = 1.0,
    niche_skew: float = 0.5,
    niche_taste_concentration: float = 1.0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Generates the interactions of the planted-group dataset.

    Args:
      seed: seeds `np.random.default_rng`; the same seed gives the same data.
      n_users, n_items: sizes.
      minority_fractions: the share of users in each minority group.
      n_mainstream_items: items of the mainstream region (default 60% of n_items); the
        rest is split evenly into one niche region per minority.
      n_mainstream_clusters, n_niche_clusters: taste clusters per region.
      majority_median, minority_median: median interactions per user, minus 5.
      minority_mainstream_share: share of a minority user's choices from the mainstream.
      majority_niche_share: share of a majority user's choices from the niche regions.
      popularity_share: share of mainstream choices drawn by global popularity rather
        than by the user's preferred clusters.
      popularity_skew: Zipf exponent of mainstream item popularity within a cluster.
      niche_skew: the same for niche items (flatter: niche tastes are spread out).
      niche_taste_concentration: Dirichlet concentration of a minority user's preference
        over its niche clusters (the majority's is 0.3).

    Returns:
      (interactions, groups): a DataFrame with int columns `user`, `item` (one row per
      interaction, users in id order) and `item_region` (the item's planted region: 0
      mainstream, k the niche items of minority k), and [n_users] int group labels
      indexed by user id (0 = majority, k = minority k, names in `GROUP_NAMES`).
    """
    # The steps are the helpers above, called in a fixed order: they share one generator.
    rng = np.random.default_rng(seed)
    n_groups = 1 + len(minority_fractions)
    counts = [int(round(f * n_users)) for f in minority_fractions]
    groups = rng.permutation(np.repeat(np.arange(n_groups), [n_users - sum(counts), *counts]))

    n_mainstream_items, n_niche = _region_sizes(
        n_items, n_groups, n_mainstream_items, (n_mainstream_clusters, n_niche_clusters)
    )
    region, cluster, within = _item_regions(
        rng,
        n_items,
        n_groups,
        n_mainstream_items,
        n_niche,
        clusters=(n_mainstream_clusters, n_niche_clusters),
        skews=(popularity_skew, niche_skew),
    )
    # Preference of each user over the items: a mixture of popularity and clusters.
    probs = _preferences(
        rng,
        groups,
        region,
        cluster,
        within,
        n_groups=n_groups,
        clusters=(n_mainstream_clusters, n_niche_clusters),
        niche_taste_concentration=niche_taste_concentration,
        popularity_share=popularity_share,
        majority_niche_share=majority_niche_share,
        minority_mainstream_share=minority_mainstream_share,
    )
    n_u = np.where(
        groups == 0,
        _activity(rng, n_users, majority_median, 300),
        _activity(rng, n_users, minority_median, 300),
    )
    users, items = _sample_items(rng, probs, n_u)
    item_labels = rng.permutation(n_items)  # raw ids hide the regions
    frame = pd.DataFrame({"user": users, "item": item_labels[items], "item_region": region[items]})
    return frame, groups


def synthetic_split(*, seed: int = 0, options: SplitOptions | None = None, **kwargs) -> Split:
    """`make_synthetic(seed=seed, **kwargs)` through the Liang et al. split, groups kept.

    Args:
      seed: the generator seed.
      options: the split options (default: the `synthetic` entry of the configs, whose
        h is None, i.e. 10% of the users).
      **kwargs: passed to `make_synthetic`.
    """
    unknown = set(kwargs) - set(inspect.signature(make_synthetic).parameters)
    if unknown:
        raise ConfigError(f"unknown option(s) for synthetic: {', '.join(sorted(unknown))}")
    frame, groups = make_synthetic(seed=seed, **kwargs)
    inter = readers.from_arrays(
        frame["user"].to_numpy(), frame["item"].to_numpy(), source=f"synthetic(seed={seed})"
    )
    split = liang_split(inter, options or SplitOptions(), dataset="synthetic")
    n_groups = int(groups.max()) + 1
    names = (
        GROUP_NAMES
        if n_groups == 3
        else ("majority",) + tuple(f"niche_{k}" for k in range(1, n_groups))
    )
    return Split(
        **{
            f: getattr(split, f)
            for f in split.__dataclass_fields__
            if not f.endswith("groups") and f != "group_names"
        },
        train_groups=groups[split.train_user_ids],
        valid_groups=groups[split.valid_user_ids],
        test_groups=groups[split.test_user_ids],
        group_names=names,
        item_groups=_item_regions_of(frame, split.item_ids),
    )


def _item_regions_of(frame: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """The planted region of each raw item id in `item_ids` (the split's columns)."""
    region = pd.Series(frame["item_region"].to_numpy(), index=frame["item"].to_numpy())
    region = region[~region.index.duplicated()]
    return region.loc[np.asarray(item_ids)].to_numpy()
