"""MaxMin-RLHF reward models (Chakraborty et al. 2024): H linear Bradley-Terry heads fitted by hard EM over users.

Supports:
- preference pairs tagged by user (a `user` column) or by a proxy tag (`subset` when there is no `user` column);
- features h(x, y) from a frozen embedding backbone through the embedding cache, as `train-rm`;
- r_h(x, y) = w_h . h(x, y), each head fitted by `bradley_terry.fit_bt_weights` (L2 logistic regression on
  chosen-minus-rejected differences) at one C, chosen by `fit_bt_head` on the pooled pairs;
- hard EM over USERS: a seeded initial assignment (k-means++-like or random), then repeatedly an M-step (refit each
  head on its users' pairs) and an E-step (each user to the head with the highest sum_j log sigma(r_h(y_w) - r_h(y_l))
  over that user's pairs; ties to the lower index), until the assignment stops changing or `max_iterations`;
- an output folder holding a `RewardModel` with objectives group0..group{H-1} (kind bradley_terry, T = identity,
  an unconditioned uniform gating with scale 1, so the default score is the mean of the group rewards and one-hot
  weights give r_h exactly; the pooled head is the model's baseline) and `assignments.json` (user -> group,
  per-iteration log-likelihood, group sizes, iterations, converged, re-seeding events).

Assumes:
- every group keeps at least `bradley_terry.MIN_PAIRS` pairs: a group with fewer (an empty one included) after the
  initial assignment or an E-step is re-seeded with the worst-explained user (the lowest mean per-pair
  log-likelihood under its own group's current head; at the start, under the pooled head) among those whose group can
  spare them (keeps a user and MIN_PAIRS pairs), repeated until it has enough; each move is recorded;
- groups are relabelled at the end by decreasing number of users (then pairs), so group0 is the largest;
- group rewards keep the Bradley-Terry logit scale (no per-head normalisation), so their values are comparable
  across groups as log-odds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paretoalign.data.schema import PreferencePair
from paretoalign.embed.backbone import Backbone
from paretoalign.errors import InputError
from paretoalign.rewards.bradley_terry import MIN_PAIRS, fit_bt_weights
from paretoalign.rewards.maxmin_config import MaxMinRMConfig
from paretoalign.rewards.reward_model import RewardModel

logger = logging.getLogger(__name__)

ASSIGNMENTS_FILE = "assignments.json"
ASSIGNMENTS_FORMAT = "paretoalign-maxmin-assignments"
DEFAULT_TAGS = ("user", "subset")
"""The tag columns tried in order when `user_field` is not set."""


def group_name(h: int) -> str:
    """The objective name of group `h`."""
    return f"group{h}"


@dataclass
class UserPairs:
    """Preference pairs with the user tag of each."""

    pairs: list[PreferencePair]
    users: list[str]
    tag_field: str
    """The column the tags came from."""
    path: str | None = None


def load_user_pairs(path: str, user_field: str | None = None) -> UserPairs:
    """Pairs and their user tags from a preference-pair file; InputError naming the file (and row) when the tag
    column is missing: `user_field`, else `user`, else `subset`."""
    from paretoalign.data.preference import optional_string, pair_from_row
    from paretoalign.data.records import location_error, read_records

    rows = list(read_records(path))
    if not rows:
        raise InputError("the file has no rows (no preference pairs)", path=str(path), field="data")
    if user_field is not None:
        tag = user_field
        if not any(row.get(tag) is not None for _, row in rows):
            raise InputError(f"no row has the user tag column {tag!r} (user_field)", path=str(path),
                             field="user_field")
    else:
        present = [t for t in DEFAULT_TAGS if any(row.get(t) is not None for _, row in rows)]
        if not present:
            raise InputError("no row has a 'user' or a 'subset' column to tag its user by: add one, or name the "
                             "column with user_field", path=str(path), field="user_field")
        tag = present[0]
    pairs, users = [], []
    for location, row in rows:
        pairs.append(pair_from_row(row, location))
        value = optional_string(row, tag, location)
        if value is None:
            raise location_error(f"the row has no user tag {tag!r} (every row needs one; user_field names the "
                                 "column)", location, tag)
        users.append(value)
    return UserPairs(pairs=pairs, users=users, tag_field=tag, path=str(path))


def check_groups(n_groups: int, users: Sequence[str], *, path: str | None = None) -> None:
    """InputError (field n_groups) unless 1 <= n_groups <= number of users and the pairs can fill every group."""
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise InputError(f"n_groups must be an integer >= 1, got {n_groups!r}", field="n_groups")
    n_users = len(set(users))
    if n_groups > n_users:
        raise InputError(f"n_groups={n_groups} is more than the {n_users} user(s) in the data: each group needs "
                         "at least one user", path=path, field="n_groups")
    if len(users) < n_groups * MIN_PAIRS:
        raise InputError(f"{len(users)} pairs cannot fill {n_groups} groups of at least {MIN_PAIRS} pairs each",
                         path=path, field="n_groups")


@dataclass
class MaxMinFit:
    """The result of `fit_maxmin_heads` (groups relabelled: group0 has the most users)."""

    W: np.ndarray
    """(H, d) float64: r_h = W[h] . h(x, y)."""
    users: list[str]
    """The distinct users, sorted."""
    assignment: np.ndarray
    """(U,) int: the group of each of `users`."""
    initial_assignment: np.ndarray
    """(U,) int: the assignment the EM started from (after re-seeding), in its own labels."""
    log_likelihood: list[float]
    """Per iteration: sum over users of the E-step's chosen log-likelihood under that iteration's M-step heads."""
    final_log_likelihood: float
    """sum_j log sigma(r_h(y_w) - r_h(y_l)) over every pair, each under its user's final head."""
    iterations: int
    converged: bool
    C: float
    reseeded: list[dict[str, Any]] = field(default_factory=list)
    """Each re-seeding move: {iteration, group (in the labels of that iteration), user}."""
    group_pairs: list[int] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    """Per group: the fraction of its own pairs its head orders correctly (ties count 1/2)."""

    @property
    def n_groups(self) -> int:
        return int(self.W.shape[0])

    @property
    def group_users(self) -> list[int]:
        """Number of users per group."""
        return np.bincount(self.assignment, minlength=self.n_groups).astype(int).tolist()

    def assignments(self) -> dict[str, str]:
        """user -> group name."""
        return {u: group_name(int(g)) for u, g in zip(self.users, self.assignment, strict=True)}


def _pair_loglik(D: np.ndarray, m: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(n, H) log sigma(w_h . D_j - m_j)."""
    return -np.logaddexp(0.0, -(D @ W.T - m[:, None]))


def _user_loglik(pair_ll: np.ndarray, user_of_pair: np.ndarray, n_users: int) -> np.ndarray:
    """(U, H) sums of `pair_ll` over each user's pairs."""
    out = np.zeros((n_users, pair_ll.shape[1]))
    np.add.at(out, user_of_pair, pair_ll)
    return out


def _kmeanspp_init(D: np.ndarray, user_of_pair: np.ndarray, n_users: int, H: int,
                   rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on cosine distance between users' mean differences, then nearest seed by cosine."""
    mean = np.zeros((n_users, D.shape[1]))
    np.add.at(mean, user_of_pair, D)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    direction = np.divide(mean, norm, out=np.zeros_like(mean), where=norm > 0)
    centers = [int(rng.integers(n_users))]
    for _ in range(1, H):
        dist = np.clip(1.0 - (direction @ direction[centers].T).max(axis=1), 0.0, None)
        dist[centers] = 0.0
        weight = dist ** 2
        if weight.sum() <= 0:  # every user already coincides with a seed: any other user
            weight = np.ones(n_users)
            weight[centers] = 0.0
        centers.append(int(rng.choice(n_users, p=weight / weight.sum())))
    assign = np.argmax(direction @ direction[centers].T, axis=1)
    assign[centers] = np.arange(H)  # a seed stays in its own group even when two seeds point the same way
    return assign


def _random_init(n_users: int, H: int, rng: np.random.Generator) -> np.ndarray:
    perm = rng.permutation(n_users)
    assign = np.empty(n_users, dtype=np.int64)
    assign[perm[:H]] = np.arange(H)
    assign[perm[H:]] = rng.integers(H, size=n_users - H)
    return assign


def _reseed(assign: np.ndarray, user_ll: np.ndarray, pairs_per_user: np.ndarray, H: int, iteration: int,
            users: Sequence[str], log: list[dict[str, Any]]) -> np.ndarray:
    """Fill every group below MIN_PAIRS pairs with the worst-explained users that other groups can spare."""
    assign = assign.copy()
    mean_ll = user_ll[np.arange(len(assign)), assign] / np.maximum(pairs_per_user, 1)
    for g in range(H):
        while pairs_per_user[assign == g].sum() < MIN_PAIRS:
            group_pairs = np.bincount(assign, weights=pairs_per_user, minlength=H)
            group_users = np.bincount(assign, minlength=H)
            spare = [u for u in range(len(assign)) if assign[u] != g and group_users[assign[u]] > 1
                     and group_pairs[assign[u]] - pairs_per_user[u] >= MIN_PAIRS]
            if not spare:
                raise InputError(f"cannot form {H} groups of at least {MIN_PAIRS} pairs each from these users "
                                 f"(group {g} is short and no other group can spare a user)", field="n_groups")
            worst = min(spare, key=lambda u: (mean_ll[u], u))
            assign[worst] = g
            mean_ll[worst] = np.inf  # moved once per re-seeding pass
            log.append({"iteration": iteration, "group": g, "user": users[worst]})
    return assign


def fit_maxmin_heads(D: np.ndarray, users: Sequence[str], n_groups: int, *, C: float,
                     margins: np.ndarray | Sequence[float] | None = None, max_iterations: int = 50,
                     init: str = "kmeans++", seed: int = 0) -> MaxMinFit:
    """Hard EM over users on pair differences D = h(x, y_w) - h(x, y_l), (n, d); `users[j]` tags pair j."""
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != len(users):
        raise ValueError(f"D must be (n, d) with one row per user tag, got {D.shape} for {len(users)} tags")
    check_groups(n_groups, users)
    H = n_groups
    m = np.zeros(D.shape[0]) if margins is None else np.asarray(margins, dtype=np.float64).ravel()
    names = sorted(set(users))
    index = {u: i for i, u in enumerate(names)}
    user_of_pair = np.array([index[u] for u in users], dtype=np.int64)
    U = len(names)
    pairs_per_user = np.bincount(user_of_pair, minlength=U)
    margin_arg = m if np.any(m) else None

    def m_step(assign: np.ndarray) -> np.ndarray:
        W = np.zeros((H, D.shape[1]))
        for h in range(H):
            rows = np.flatnonzero(assign[user_of_pair] == h)
            W[h] = fit_bt_weights(D[rows], C, margins=None if margin_arg is None else m[rows],
                                  name=group_name(h))
        return W

    rng = np.random.default_rng(seed)
    if init == "kmeans++":
        assign = _kmeanspp_init(D, user_of_pair, U, H, rng)
    elif init == "random":
        assign = _random_init(U, H, rng)
    else:
        raise InputError(f"init must be 'kmeans++' or 'random', got {init!r}", field="init")
    reseeded: list[dict[str, Any]] = []
    pooled = fit_bt_weights(D, C, margins=margin_arg)
    pooled_ll = _user_loglik(_pair_loglik(D, m, pooled[None, :]), user_of_pair, U)
    assign = _reseed(assign, np.repeat(pooled_ll, H, axis=1), pairs_per_user, H, 0, names, reseeded)
    initial = assign.copy()
    history: list[float] = []
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        W = m_step(assign)
        user_ll = _user_loglik(_pair_loglik(D, m, W), user_of_pair, U)
        new = _reseed(np.argmax(user_ll, axis=1), user_ll, pairs_per_user, H, iterations, names, reseeded)
        history.append(float(user_ll[np.arange(U), new].sum()))
        if np.array_equal(new, assign):
            converged = True
            break
        assign = new
    if not converged:
        W = m_step(assign)  # the saved heads fit the saved assignment
    counts = np.bincount(assign, minlength=H)
    pair_counts = np.bincount(assign[user_of_pair], minlength=H)
    order = sorted(range(H), key=lambda h: (-counts[h], -pair_counts[h], int(np.flatnonzero(assign == h)[0])))
    relabel = np.empty(H, dtype=np.int64)
    relabel[order] = np.arange(H)
    assign, W = relabel[assign], W[order]
    pair_ll = _pair_loglik(D, m, W)
    own = assign[user_of_pair]
    z = (D @ W.T)[np.arange(len(own)), own]
    correct = (z > 0) + 0.5 * (z == 0)
    return MaxMinFit(W=W, users=names, assignment=assign, initial_assignment=initial, log_likelihood=history,
                     final_log_likelihood=float(pair_ll[np.arange(len(own)), own].sum()), iterations=iterations,
                     converged=converged, C=float(C), reseeded=reseeded,
                     group_pairs=np.bincount(own, minlength=H).astype(int).tolist(),
                     train_accuracy=[float(correct[own == h].mean()) for h in range(H)])


def assignments_record(fit: MaxMinFit, tag_field: str, *, config: MaxMinRMConfig | None = None,
                       pooled_accuracy: Sequence[float] | None = None) -> dict[str, Any]:
    """The content of assignments.json."""
    groups = [group_name(h) for h in range(fit.n_groups)]
    record: dict[str, Any] = {
        "format": ASSIGNMENTS_FORMAT, "user_field": tag_field, "n_groups": fit.n_groups, "groups": groups,
        "assignments": fit.assignments(),
        "group_sizes": dict(zip(groups, fit.group_users, strict=True)),
        "group_pairs": dict(zip(groups, fit.group_pairs, strict=True)),
        "train_accuracy": dict(zip(groups, fit.train_accuracy, strict=True)),
        "log_likelihood": list(fit.log_likelihood), "final_log_likelihood": fit.final_log_likelihood,
        "iterations": fit.iterations, "converged": fit.converged, "C": fit.C,
        "initial_assignments": {u: int(g) for u, g in zip(fit.users, fit.initial_assignment, strict=True)},
        "reseeded": list(fit.reseeded)}
    if pooled_accuracy is not None:
        record["pooled_accuracy"] = dict(zip(groups, map(float, pooled_accuracy), strict=True))
    if config is not None:
        record["init"], record["seed"] = config.init, config.seed
    return record


RUN_ONLY_FIELDS = ("progress",)


def train_maxmin_rm(config: MaxMinRMConfig, data: UserPairs | None = None, *, backbone: Backbone | None = None,
                    overwrite: bool = False) -> tuple[RewardModel, MaxMinFit, dict[str, Any]]:
    """Fit H group reward heads (and save the folder to `config.output_dir` if set); returns (model, fit, stats).

    The output folder is checked first (`output_paths.check_output_dir`), then the data and n_groups, all before
    the backbone loads.
    """
    from paretoalign.embed.cached import embed_with_cache
    from paretoalign.rewards.armo_trainer import embedding_cache_path, feature_columns, training_backbone
    from paretoalign.rewards.bradley_terry import fit_bt_head
    from paretoalign.rewards.gating import GatingNetwork

    if config.output_dir:
        from paretoalign.output_paths import REWARD_MODEL, check_output_dir, config_input_paths

        check_output_dir(config.output_dir, REWARD_MODEL, inputs=config_input_paths(config), overwrite=overwrite,
                         field="output_dir")
    t_start = time.perf_counter()
    if data is None:
        if not config.data:
            raise InputError("give data=FILE (preference pairs tagged by user)", field="data")
        data = load_user_pairs(config.data, config.user_field)
    check_groups(config.n_groups, data.users, path=data.path)

    backbone, spec = training_backbone(config, backbone)  # type: ignore[arg-type]  # reads the backbone fields only
    full_dim = int(backbone.feature_dim)
    keep = feature_columns(backbone, config.features, full_dim)
    pairs = data.pairs
    n = len(pairs)
    t_embed = time.perf_counter()
    feats = embed_with_cache(backbone, [p.prompt for p in pairs] * 2,
                             [p.chosen for p in pairs] + [p.rejected for p in pairs],
                             cache=embedding_cache_path(config.embedding_cache, backbone.fingerprint),
                             batch_size=config.batch_size, progress=config.progress)
    embed_s = time.perf_counter() - t_embed
    t_fit = time.perf_counter()
    D = (feats.response[:n][:, keep].astype(np.float64) - feats.response[n:][:, keep].astype(np.float64))
    margins = np.array([p.margin if p.margin is not None else 0.0 for p in pairs])
    margin_arg = margins if np.any(margins) else None
    pooled = fit_bt_head(D, margins=margin_arg, Cs=np.asarray(config.bt_cs), val_fraction=config.head_val_fraction,
                         seed=config.seed)
    fit = fit_maxmin_heads(D, data.users, config.n_groups, C=pooled.C, margins=margin_arg,
                           max_iterations=config.max_iterations, init=config.init, seed=config.seed)
    index = {u: i for i, u in enumerate(fit.users)}
    own = fit.assignment[np.array([index[u] for u in data.users])]
    z = D @ pooled.w.astype(np.float64)
    pooled_accuracy = [float(np.mean((z[own == h] > 0) + 0.5 * (z[own == h] == 0))) for h in range(fit.n_groups)]
    fit_s = time.perf_counter() - t_fit

    H = fit.n_groups
    names = [group_name(h) for h in range(H)]
    W = np.zeros((H, full_dim))
    W[:, keep] = fit.W
    baseline = np.zeros(full_dim)
    baseline[keep] = pooled.w
    stats = {"embed_s": embed_s, "fit_s": fit_s, "total_s": time.perf_counter() - t_start, "n_pairs": n,
             "n_users": len(fit.users)}
    record = assignments_record(fit, data.tag_field, config=config, pooled_accuracy=pooled_accuracy)
    metadata = {
        "method": "maxmin",
        "heads": {names[h]: {"kind": "bradley_terry", "C": fit.C, "n_pairs": fit.group_pairs[h],
                             "n_users": fit.group_users[h], "train_accuracy": fit.train_accuracy[h]}
                  for h in range(H)},
        "maxmin": {k: v for k, v in record.items() if k not in ("assignments", "initial_assignments", "format")},
        "baseline": {"C": float(pooled.C), "val_accuracy": float(pooled.val_accuracy)},
        "training": stats,
        "config": {k: v for k, v in asdict(config).items() if k not in RUN_ONLY_FIELDS}}
    # Unconditioned gating with zero logits: uniform weights 1/H and scale 1 (the default score is the groups' mean).
    gating = GatingNetwork(int(backbone.prompt_feature_dim), H, hidden=(), dropout=0.0, temperature=1.0,
                           conditioned=False)
    model = RewardModel(objective_names=names, objective_kinds=dict.fromkeys(names, "bradley_terry"),
                        W=W.astype(np.float32), T=np.eye(H, dtype=np.float32), gating=gating,
                        baseline_w=baseline.astype(np.float32), backbone_spec=spec, metadata=metadata,
                        backbone=backbone)
    if config.output_dir:
        save_maxmin_model(model, record, config.output_dir)
    return model, fit, stats


def save_maxmin_model(model: RewardModel, record: dict[str, Any], directory: str | Path) -> Path:
    """Write the reward model and assignments.json into `directory` as one atomic replacement."""
    from paretoalign.atomic_io import atomic_directory, dumps_json

    target = Path(directory)
    with atomic_directory(target) as tmp:
        # the model's own atomic save into the (empty) staging folder, then the assignments beside it
        model.save_pretrained(tmp, overwrite=True)
        (tmp / ASSIGNMENTS_FILE).write_text(dumps_json(record, indent=2) + "\n", encoding="utf-8")
    return target
