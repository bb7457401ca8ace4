"""Train an ArmoRM-style interpretable multi-objective reward model on frozen backbone embeddings.

Supports:
- any embedding backbone (causal LM hidden states or a sentence encoder), features cached on disk;
- rated objectives (absolute ratings, NaN = missing) -> ridge heads, alpha chosen on a validation split;
- pairwise-only objectives -> linear Bradley-Terry heads (our extension of ArmoRM);
- a length-derived verbosity objective and ArmoRM's verbosity de-correlation, applied identically when scoring;
- a prompt-conditioned gating network trained with the Bradley-Terry loss on all pairs, plus a pooled BT baseline head.

Assumes: the backbone is frozen (only heads, the transform, the gating MLP and its scale are fitted); every
objective has enough rows to fit (ridge: >= 5 rated rows; BT: >= 5 pairs).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from paretoalign.data.schema import Message, PreferencePair, RatedResponse
from paretoalign.embed.backbone import Backbone, Features
from paretoalign.errors import InputError
from paretoalign.rewards.armo_config import ArmoRMConfig

logger = logging.getLogger(__name__)

SENTENCE_ENCODER_ALIASES = {"minilm"}


def training_backbone(config: ArmoRMConfig, backbone: Backbone | None) -> tuple[Backbone, dict[str, Any]]:
    """(backbone, its spec): the given backbone (its own spec, or an in-memory marker) or the one `config` names."""
    if backbone is None:
        from paretoalign.embed.registry import load_backbone

        spec = resolve_backbone_spec(config)
        return load_backbone(spec, trust_remote_code=config.trust_remote_code), spec
    try:
        return backbone, backbone.spec()
    except Exception:  # an in-memory backbone without a reloadable reference
        return backbone, {"kind": "in_memory", "fingerprint": backbone.fingerprint}


def resolve_backbone_spec(config: ArmoRMConfig) -> dict[str, Any]:
    """The backbone spec (as `load_backbone` takes it) that `config` asks for."""
    kind = config.backbone_kind
    if kind == "auto":
        is_st_dir = Path(config.backbone).is_dir() and (Path(config.backbone) / "modules.json").is_file()
        kind = "sentence_encoder" if config.backbone in SENTENCE_ENCODER_ALIASES or is_st_dir else "causal_lm"
    if kind == "causal_lm":
        spec: dict[str, Any] = {"kind": "causal_lm", "model": config.backbone, "gguf_file": config.gguf_file,
                                "max_length": config.max_length or 512, "dtype": "float32"}
    elif kind == "sentence_encoder":
        spec = {"kind": "sentence_encoder", "model": config.backbone, "max_length": config.max_length}
    else:
        raise InputError(f"backbone_kind must be 'auto', 'causal_lm' or 'sentence_encoder', not {kind!r}",
                         field="backbone_kind")
    # config.trust_remote_code is passed to load_backbone, never saved in the spec: whoever loads the saved model
    # decides for themselves.
    return spec


def load_config_data(config: ArmoRMConfig):
    """The training data named by `config.sources` (the bundled default when None)."""
    from paretoalign.data.bundled import default_sources_config, shared_data_config
    from paretoalign.data.sources import load_sources_config, load_training_data, restrict_to_split

    if config.sources is None:
        sources = default_sources_config()
    elif config.sources == "shared":
        if not config.shared_dir:
            raise InputError("sources=shared needs shared_dir=DIR (the shared data folder, e.g. ../shared/data)",
                             field="shared_dir")
        sources = shared_data_config(config.shared_dir)
    else:
        shared = Path(config.shared_dir) if config.shared_dir else None
        sources = load_sources_config(config.sources, shared_dir=shared)
    return load_training_data(restrict_to_split(sources, config.split))


def embedding_cache_path(setting: str | None, fingerprint: str) -> Path | None:
    """The cache file for a backbone: 'auto' = one file per backbone fingerprint in the default cache folder, a
    directory = the same inside it, another path = that file, None/'none' = no cache."""
    if not setting or setting.lower() == "none":
        return None
    if setting == "auto":
        from paretoalign.embed.models import default_cache_dir

        folder = default_cache_dir() / "embeddings"
    else:
        folder = Path(setting).expanduser()
        if not (folder.is_dir() or setting.endswith(("/", "\\"))):
            return folder
    return folder / f"{fingerprint[:32]}.sqlite"


def response_lengths(responses: list[str]) -> np.ndarray:
    """The verbosity target: log(1 + number of whitespace-separated words) per response."""
    return np.log1p(np.array([len(r.split()) for r in responses], dtype=np.float64))


def _check_enough_rows(pairs: list[PreferencePair], ratings: list[RatedResponse], pair_objectives: set[str],
                       rated_objectives: set[str], sources: str | None = None) -> None:
    """InputError, before any work, for an objective with too few rows to fit its head."""
    from paretoalign.rewards.bradley_terry import MIN_PAIRS
    from paretoalign.rewards.ridge import MIN_ROWS

    for name in sorted(pair_objectives):
        count = sum(p.objective == name for p in pairs)
        if count < MIN_PAIRS:
            raise InputError(f"objective {name!r} has {count} preference pair(s); a Bradley-Terry head needs at least "
                             f"{MIN_PAIRS} ({len(pairs)} pairs in all)", path=sources, field="sources")
    for name in sorted(rated_objectives):
        count = sum(not math.isnan(r.rating(name)) for r in ratings)
        if count < MIN_ROWS:
            raise InputError(f"objective {name!r} has {count} rated response(s); a ridge head needs at least "
                             f"{MIN_ROWS}", path=sources, field="sources")


def _objective_order(config: ArmoRMConfig, pair_objectives: set[str], rated_objectives: set[str]) -> list[str]:

    data_objectives = sorted(pair_objectives | rated_objectives)
    if config.verbosity_objective in data_objectives:
        raise InputError(f"objective name {config.verbosity_objective!r} is reserved for the length-derived "
                         "verbosity objective; rename it in the sources config", field="verbosity_objective")
    if config.objectives is None:
        return data_objectives + [config.verbosity_objective]
    missing = [o for o in config.objectives if o not in data_objectives and o != config.verbosity_objective]
    if missing:
        raise InputError(f"objectives {missing} were requested but the data has none of their rows "
                         f"(data objectives: {data_objectives})", field="objectives")
    order = list(config.objectives)
    if config.verbosity_objective not in order:
        order.append(config.verbosity_objective)
    return order


def feature_columns(backbone: Backbone, names: list[str] | str | None, dim: int) -> np.ndarray:
    """Column indices of h(x, y) for the named parts of the backbone's `feature_layout` (None: every column;
    "auto": the backbone's `default_head_features`, else every column)."""
    if names == "auto":
        names = getattr(backbone, "default_head_features", None)
        names = list(names) if names else None
    if names is None:
        return np.arange(dim)
    layout = getattr(backbone, "feature_layout", None) or {}
    unknown = [n for n in names if n not in layout]
    if unknown:
        known = ", ".join(layout) if layout else "none: this backbone's features have no named parts"
        raise InputError(f"features {unknown} are not parts of this backbone's features (parts: {known})",
                         field="features")
    return np.concatenate([np.arange(*layout[n]) for n in names])


def _embed_rows(backbone: Backbone, prompts: list[list[Message]], responses: list[str],
                config: ArmoRMConfig, spec: dict[str, Any]) -> Features:
    """Features of the rows through the embedding cache; with embed_engine=ray, Ray actors built from `spec` embed
    the rows the cache lacks (the actors start only when some are missing)."""
    from paretoalign.embed.cached import embed_with_cache

    cache = embedding_cache_path(config.embedding_cache, backbone.fingerprint)
    if config.embed_engine != "ray":
        return embed_with_cache(backbone, prompts, responses, cache=cache, batch_size=config.batch_size,
                                progress=config.progress)
    from paretoalign.embed.ray_embed import MAX_ROWS_PER_TASK, RayEmbedder

    with RayEmbedder(spec, num_workers=config.embed_workers, trust_remote_code=config.trust_remote_code,
                     ray_address=config.embed_ray_address, expected_fingerprint=backbone.fingerprint) as embedder:
        # chunks of a few slices per worker: each chunk is committed to the cache before the next starts
        return embed_with_cache(backbone, prompts, responses, cache=cache, batch_size=config.batch_size,
                                progress=config.progress, embedder=embedder,
                                chunk_size=2 * MAX_ROWS_PER_TASK * config.embed_workers)


def fit_objective_heads(config: ArmoRMConfig, objectives: list[str], pairs: list[PreferencePair],
                        ratings: list[RatedResponse], pair_feats: tuple[Features, Features],
                        rating_feats: Features, reference: np.ndarray, reference_lengths: np.ndarray,
                        keep: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, str], dict[str, Any]]:
    """Fit one linear head per objective; rows are scaled to unit std on the reference responses.

    `keep`: the feature columns the data objectives' heads may use (None: all); the length-derived verbosity head
    always sees every column, and the other columns of W stay zero.
    """
    from paretoalign.rewards.bradley_terry import fit_bt_head
    from paretoalign.rewards.ridge import fit_ridge_heads

    d = reference.shape[1]
    keep = np.arange(d) if keep is None else np.asarray(keep)
    W = np.zeros((len(objectives), d), dtype=np.float64)
    kinds: dict[str, str] = {}
    report: dict[str, Any] = {}
    chosen_f, rejected_f = pair_feats
    pair_objective = np.array([p.objective for p in pairs], dtype=object)
    for i, name in enumerate(objectives):
        if name == config.verbosity_objective:
            fit = fit_ridge_heads(reference, reference_lengths[:, None], alphas=np.asarray(config.ridge_alphas),
                                  val_fraction=config.head_val_fraction, seed=config.seed)
            W[i] = fit.W[0]
            kinds[name] = "length"
            report[name] = {"kind": "length", "alpha": float(fit.alphas[0]), "val_r2": float(fit.val_r2[0]),
                            "n_rows": int(fit.n_rows[0])}
            continue
        rated = np.array([r.rating(name) for r in ratings], dtype=np.float64)
        rated_mask = ~np.isnan(rated) if len(ratings) else np.zeros(0, dtype=bool)
        if rated_mask.any():
            fit = fit_ridge_heads(rating_feats.response[:, keep], rated[:, None],
                                  alphas=np.asarray(config.ridge_alphas), val_fraction=config.head_val_fraction,
                                  seed=config.seed, objective_names=[name])
            W[i, keep] = fit.W[0]
            kinds[name] = "ridge"
            report[name] = {"kind": "ridge", "alpha": float(fit.alphas[0]), "val_r2": float(fit.val_r2[0]),
                            "val_mse": float(fit.val_mse[0]), "n_rows": int(fit.n_rows[0])}
        else:
            idx = np.flatnonzero(pair_objective == name)
            diffs = (chosen_f.response[idx][:, keep].astype(np.float64)
                     - rejected_f.response[idx][:, keep].astype(np.float64))
            margins = np.array([pairs[j].margin if pairs[j].margin is not None else 0.0 for j in idx])
            fit = fit_bt_head(diffs, margins=margins if np.any(margins) else None, Cs=np.asarray(config.bt_cs),
                              val_fraction=config.head_val_fraction, seed=config.seed, name=name)
            W[i, keep] = fit.w
            kinds[name] = "bradley_terry"
            report[name] = {"kind": "bradley_terry", "C": float(fit.C), "val_accuracy": float(fit.val_accuracy),
                            "n_pairs": int(fit.n_pairs)}
    # Unit std on the reference set makes objectives comparable for the de-correlation grid, gating and user weights.
    std = (reference.astype(np.float64) @ W.T).std(axis=0)
    for i, name in enumerate(objectives):
        if not math.isfinite(std[i]) or std[i] <= 0:
            raise ValueError(f"the head of objective {name!r} is constant on the reference responses")
        W[i] /= std[i]
        report[name]["reference_std"] = float(std[i])
    return W, kinds, report


def crossfit_pair_rewards(config: ArmoRMConfig, objectives: list[str], kinds: dict[str, str], W: np.ndarray,
                          head_report: dict[str, Any], pairs: list[PreferencePair],
                          pair_feats: tuple[Features, Features], reference: np.ndarray,
                          keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw rewards r of each pair's chosen and rejected reply, out-of-fold for the pair's own BT objective.

    The gating learns how far to trust each head; rewards a head gives the very pairs it was fitted on are
    optimistic (stacking leakage), so each pair's own-objective reward comes from a head fitted on the other
    `gating_crossfit_folds - 1` folds (same C, unit std on the reference set like the full head).
    """
    from paretoalign.rewards.bradley_terry import fit_bt_weights

    chosen = pair_feats[0].response.astype(np.float64)
    rejected = pair_feats[1].response.astype(np.float64)
    r_w, r_l = chosen @ W.T, rejected @ W.T
    folds = config.gating_crossfit_folds
    if folds < 2:
        return r_w, r_l
    pair_objective = np.array([p.objective for p in pairs], dtype=object)
    rng = np.random.default_rng(config.seed)
    for i, name in enumerate(objectives):
        if kinds[name] != "bradley_terry":
            continue
        idx = np.flatnonzero(pair_objective == name)
        if len(idx) < 2 * folds:
            continue  # too few pairs to hold any out: keep the in-sample rewards
        fold_of = rng.permutation(len(idx)) % folds
        margins = np.array([pairs[j].margin or 0.0 for j in idx])
        for f in range(folds):
            held, fit_rows = idx[fold_of == f], idx[fold_of != f]
            cols = np.arange(chosen.shape[1]) if keep is None else keep
            w = np.zeros(chosen.shape[1])
            w[cols] = fit_bt_weights(chosen[fit_rows][:, cols] - rejected[fit_rows][:, cols],
                                     head_report[name]["C"],
                                     margins=margins[fold_of != f] if np.any(margins) else None, name=name)
            w /= (reference @ w).std()
            r_w[held, i] = chosen[held] @ w
            r_l[held, i] = rejected[held] @ w
    return r_w, r_l


def train_reward_model(config: ArmoRMConfig, data=None, *, backbone: Backbone | None = None,
                       overwrite: bool = False):
    """Train (and save to `config.output_dir` if set) a multi-objective reward model; returns (model, stats).

    The output folder is checked first (`paretoalign.output_paths.check_output_dir`): missing, empty or a previous
    reward model, else InputError unless `overwrite`.
    """
    from paretoalign.rewards.bradley_terry import fit_bt_head
    from paretoalign.rewards.decorrelation import apply_transform, lambda_grid, verbosity_transform
    from paretoalign.rewards.gating import train_gating
    from paretoalign.rewards.reward_model import RewardModel

    if config.output_dir:
        from paretoalign.output_paths import REWARD_MODEL, check_output_dir, config_input_paths

        check_output_dir(config.output_dir, REWARD_MODEL, inputs=config_input_paths(config), overwrite=overwrite,
                         field="output_dir")
    t_start = time.perf_counter()
    data = data if data is not None else load_config_data(config)
    pairs, ratings = list(data.pairs), list(data.ratings)
    # Every data problem is reported here, before the backbone loads or any embedding starts (InputError: the user's
    # data, named by the `sources` setting).
    if not pairs:
        raise InputError("the training data has no preference pairs (the gating network trains on them)",
                         path=config.sources, field="sources")
    unlabeled = [p.source or p.id for p in pairs if not p.objective]
    if unlabeled:
        raise InputError(f"{len(unlabeled)} pairs have no objective (first: {unlabeled[:3]}); map them in the "
                         "sources config", field="sources")
    pair_objectives = {p.objective for p in pairs}
    rated_objectives = {k for r in ratings for k, v in r.ratings.items() if not math.isnan(v)}
    both = pair_objectives & rated_objectives
    if both:
        raise InputError(f"objectives {sorted(both)} have both ratings and pairs; give each objective one kind of "
                         "data", field="sources")
    _check_enough_rows(pairs, ratings, pair_objectives, rated_objectives, config.sources)
    objectives = _objective_order(config, pair_objectives, rated_objectives)

    backbone, spec = training_backbone(config, backbone)

    if config.embed_engine == "ray" and spec.get("kind") == "in_memory":
        raise InputError("embed_engine=ray loads the backbone on each Ray actor from its spec, and this in-memory "
                         "backbone has none: use embed_engine=local", field="embed_engine")
    full_dim = int(backbone.feature_dim)
    keep = feature_columns(backbone, config.features, full_dim)  # a bad name fails before any embedding
    t_embed = time.perf_counter()
    n = len(pairs)
    prompts = [p.prompt for p in pairs] * 2 + [r.prompt for r in ratings]
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs] + [r.response for r in ratings]
    feats = _embed_rows(backbone, prompts, responses, config, spec)
    embed_s = time.perf_counter() - t_embed

    t_fit = time.perf_counter()
    chosen_f = feats.take(np.arange(n))
    rejected_f = feats.take(np.arange(n, 2 * n))
    rating_f = feats.take(np.arange(2 * n, len(feats)))
    # Reference set: every distinct response row seen in training.
    _, first = np.unique(np.asarray(feats.response), axis=0, return_index=True)
    first = np.sort(first)
    reference = feats.response[first].astype(np.float64)
    reference_lengths = response_lengths([responses[i] for i in first])

    W, kinds, head_report = fit_objective_heads(config, objectives, pairs, ratings, (chosen_f, rejected_f),
                                                rating_f, reference, reference_lengths, keep)
    v = objectives.index(config.verbosity_objective)
    R_ref = reference @ W.T
    if config.decorrelate:
        grid = lambda_grid(config.decorrelation_max_lambda, name="decorrelation_max_lambda")
        deco = verbosity_transform(R_ref, v, grid=grid, threshold=config.decorrelation_threshold,
                                   objective_names=objectives)
        T = np.asarray(deco.T, dtype=np.float64)
        deco_report = {name: {"lambda": float(deco.lambdas[i]), "spearman_before": float(deco.spearman_before[i]),
                              "spearman_after": float(deco.spearman_after[i]), "satisfied": bool(deco.satisfied[i])}
                       for i, name in enumerate(objectives) if i != v}
    else:
        T = np.eye(len(objectives))
        deco_report = {}

    raw_w, raw_l = crossfit_pair_rewards(config, objectives, kinds, W, head_report, pairs, (chosen_f, rejected_f),
                                         reference, keep)
    r_w, r_l = apply_transform(raw_w, T), apply_transform(raw_l, T)
    gating_fit = train_gating(chosen_f.prompt, r_w, r_l, hidden=tuple(config.gating_hidden),
                              dropout=config.gating_dropout, temperature=config.gating_temperature,
                              steps=config.gating_steps, batch_size=config.gating_batch_size, lr=config.gating_lr,
                              weight_decay=config.gating_weight_decay, seed=config.seed, progress=config.progress,
                              method=config.gating_method)
    baseline = fit_bt_head(chosen_f.response[:, keep].astype(np.float64)
                           - rejected_f.response[:, keep].astype(np.float64),
                           Cs=np.asarray(config.bt_cs), val_fraction=config.head_val_fraction, seed=config.seed)
    fit_s = time.perf_counter() - t_fit
    baseline_full = np.zeros(full_dim)
    baseline_full[keep] = baseline.w

    stats = {"embed_s": embed_s, "fit_s": fit_s, "total_s": time.perf_counter() - t_start,
             "n_pairs": n, "n_ratings": len(ratings), "n_reference": int(len(first)),
             "pairs_per_objective": {o: int(sum(p.objective == o for p in pairs)) for o in sorted(pair_objectives)}}
    metadata = {"heads": head_report, "decorrelation": deco_report,
                "gating": {k: v for k, v in gating_fit.history.items() if not isinstance(v, list)},
                "baseline": {"C": float(baseline.C), "val_accuracy": float(baseline.val_accuracy)},
                "training": stats, "config": _config_record(config)}
    model = RewardModel(objective_names=objectives, objective_kinds=kinds, W=W.astype(np.float32),
                        T=T.astype(np.float32), gating=gating_fit.network, baseline_w=baseline_full.astype(np.float32),
                        backbone_spec=spec, metadata=metadata, backbone=backbone)
    if config.output_dir:
        model.save_pretrained(config.output_dir, overwrite=overwrite)
    return model, stats


RUN_ONLY_FIELDS = ("progress", "embed_engine", "embed_workers", "embed_ray_address")
"""Settings of how a run executes, not of what it fits (the same model either way): not in the model's record."""


def _config_record(config: ArmoRMConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(config).items() if k not in RUN_ONLY_FIELDS}
