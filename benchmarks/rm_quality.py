"""Which reward-model choices hold up on data they never saw: accuracy (two protocols) against embedding and fit time.

Every choice is trained by the real trainer (`train_reward_model`) on features looked up from one embedding pass per
backbone, so all choices see the same rows, the same splits and the same run:

(a) held-out: train on the "train" side of the training datasets, test on the "test" side of every dataset of
    ../shared/data (the project's seeded prompt-level split, `paretoalign.data.splits`);
(b) leave-one-dataset-out (LODO): for each dataset D, train on the train side of the OTHER training datasets and test on
    all of D (its train side included: nothing of D was seen). For a dataset outside the training set (XSTest,
    AlpacaEval) this is the model of (a).

Training datasets (`--train-sets`): by default only the ones whose licence lets derived weights ship (HH-RLHF MIT,
HHH Apache-2.0, LLMBar MIT, OASST Apache-2.0); XSTest (model licences) and AlpacaEval (CC BY-NC) are test-only.
Scores: "final" (gated), "bt_baseline" (pooled Bradley-Terry head on the same features), "length" (the longer reply)
and the best single objective; mean over datasets with percentile bootstrap 95 % intervals. Also the OASST pool pick:
per prompt with >= 3 ranked replies, how often the top-scored reply is the human top-ranked one, vs the longest reply.

Choices (`--choices`, comma-separated; see CHOICES): backbone (minilm, smollm2, gemma3-270m hidden states, and
concatenations), features (h(x,y), h(x,y) - h(x), products, length, policy likelihood: mean token log-prob of the reply
under SmolLM2 and PMI log pi(y|x) - log pi(y)), gating (bt / pro / none), verbosity de-correlation on or off.

MiniLM runs on every pair. The causal-LM backbones and the likelihood features cost ~1-2 s per pair on 2 CPU cores, so
choices that need them use a stratified subsample (`--sub-train`, `--sub-test` pairs per dataset and side), and the
MiniLM choices are re-run on the same subsample for a like-for-like row. Usage:

    .venv/bin/python benchmarks/rm_quality.py                                    # MiniLM levers, all pairs (~15 min)
    .venv/bin/python benchmarks/rm_quality.py --choices sub --sub-train 60 --sub-test 40   # + backbones, likelihood

Prints one table per protocol and writes benchmarks/results/rm_quality.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
PERMISSIVE = ("hh_rlhf", "hhh", "llmbar", "oasst")
ALL_PAIR_SETS = ("hh_rlhf", "hhh", "llmbar", "oasst", "xstest", "alpacaeval")
OASST_POOLS = "oasst_en100_ranked/oasst_en100_ranked_replies.jsonl"

# name -> (backbone parts, feature view, ArmoRMConfig overrides). "default" is ArmoRMConfig() as it is now; "armo" is
# the previous default (the paper's recipe: heads on every feature column, verbosity de-correlation on), and every
# other MiniLM lever is measured against it (ARMO merged in).
ARMO = {"features": None, "decorrelate": True}
CHOICES: dict[str, tuple[tuple[str, ...], str, dict[str, Any]]] = {
    "default": (("minilm",), "y+xy+len", {}),
    "armo": (("minilm",), "y+xy+len", ARMO),
    "gating=pro": (("minilm",), "y+xy+len", {**ARMO, "gating_method": "pro"}),
    "gating=pro_margin": (("minilm",), "y+xy+len", {**ARMO, "gating_method": "pro_margin"}),
    "gating=pro;tau=1": (("minilm",), "y+xy+len", {**ARMO, "gating_method": "pro", "gating_temperature": 1.0}),
    "gating=pro;decorrelate=off": (("minilm",), "y+xy+len", {**ARMO, "gating_method": "pro", "decorrelate": False}),
    "gating=none": (("minilm",), "y+xy+len", {**ARMO, "gating_method": "none"}),
    "decorrelate=off": (("minilm",), "y+xy+len", {**ARMO, "decorrelate": False}),
    "features=y+len": (("minilm",), "y+len", ARMO),
    "features=y+xy": (("minilm",), "y+xy", ARMO),
    "gating=pro;features=y+xy": (("minilm",), "y+xy", {**ARMO, "gating_method": "pro"}),
    "features=y+xy+diff+len": (("minilm",), "y+xy+diff+len", ARMO),
    "features=y+xy+lenx": (("minilm",), "y+xy+lenx", ARMO),
    "heads=y+xy": (("minilm",), "y+xy+len", {**ARMO, "features": ["response", "product"]}),
    "heads=y+xy;decorrelate=off": (("minilm",), "y+xy+len", {"features": ["response", "product"],
                                                             "decorrelate": False}),
    "smollm2": (("smollm2",), "h", {}),
    "smollm2:h-hx": (("smollm2",), "h-hx", {}),
    "gemma3-270m": (("gemma3-270m",), "h", {}),
    "minilm+smollm2": (("minilm", "smollm2"), "concat", {}),
    "minilm+likelihood": (("minilm", "likelihood"), "concat", {}),
    "smollm2+likelihood": (("smollm2", "likelihood"), "concat", {}),
}
FULL_CHOICES = ("default", "armo", "gating=pro", "gating=pro_margin", "gating=pro;tau=1", "gating=pro;decorrelate=off",
                "gating=none", "decorrelate=off", "features=y+len", "features=y+xy", "gating=pro;features=y+xy",
                "features=y+xy+diff+len", "features=y+xy+lenx", "heads=y+xy", "heads=y+xy;decorrelate=off")
SUB_CHOICES = ("default", "armo", "gating=pro", "smollm2", "smollm2:h-hx", "gemma3-270m", "minilm+smollm2",
               "minilm+likelihood", "smollm2+likelihood")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Row:
    """One labelled pair with its dataset and side of the held-out split."""

    pair: Any
    dataset: str
    side: str


def load_rows(shared: Path) -> list[Row]:
    """Every pair of the shared data with its dataset and split side."""
    from paretoalign.data.bundled import shared_data_config
    from paretoalign.data.sources import load_training_data
    from paretoalign.data.splits import split_of
    from paretoalign.eval.rm_eval import dataset_of

    data = load_training_data(shared_data_config(shared))
    return [Row(p, dataset_of(p), split_of(p.prompt)) for p in data.pairs]


def load_pools(shared: Path) -> list[dict[str, Any]]:
    """OASST prompts with >= 3 ranked replies: {"prompt", "side", "replies", "ranks"}."""
    from paretoalign.data.conversation import normalize_prompt
    from paretoalign.data.splits import split_of

    groups: dict[str, list[dict]] = defaultdict(list)
    with open(shared / OASST_POOLS, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            groups[json.dumps(row["messages"], sort_keys=True)].append(row)
    pools = []
    for rows in groups.values():
        if len(rows) < 3:
            continue
        prompt = normalize_prompt(rows[0]["messages"], location="pools", field="messages")
        pools.append({"prompt": prompt, "side": split_of(prompt), "replies": [r["response"] for r in rows],
                      "ranks": [int(r["rank"]) for r in rows]})
    return pools


def subsample(rows: list[Row], n_train: int, n_test: int, seed: int) -> list[Row]:
    """Up to n_train train-side and n_test test-side pairs per dataset (seeded)."""
    rng = random.Random(seed)
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.dataset, r.side)].append(r)
    out = []
    for (_, side), group in sorted(by.items()):
        k = n_train if side == "train" else n_test
        out.extend(group if len(group) <= k else rng.sample(group, k))
    return out


# ------------------------------------------------------------------------------------------------ features
def _key(prompt, response: str) -> str:
    return json.dumps([prompt, response], sort_keys=True, ensure_ascii=False)


class LookupBackbone:
    """Features computed once per (prompt, response), served to the trainer and the evaluation by lookup."""

    def __init__(self, name: str, table: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.name = name
        self.table = table
        first = next(iter(table.values()))
        self.feature_dim = int(first[0].shape[0])
        self.prompt_feature_dim = int(first[1].shape[0])
        self.fingerprint = f"lookup:{name}"

    def embed(self, prompts, responses, *, batch_size=None, progress=False):
        """Features of each row, from the table."""
        from paretoalign.embed.backbone import Features

        rows = [self.table[_key(p, r)] for p, r in zip(prompts, responses, strict=True)]
        return Features(np.stack([r[0] for r in rows]).astype(np.float32),
                        np.stack([r[1] for r in rows]).astype(np.float32))

    def spec(self) -> dict[str, Any]:
        """No reloadable spec (benchmark only)."""
        raise RuntimeError("a benchmark lookup backbone")


def _texts(rows: list[Row], pools: list[dict]) -> tuple[list, list[str]]:
    prompts, responses = [], []
    for r in rows:
        prompts += [r.pair.prompt, r.pair.prompt]
        responses += [r.pair.chosen, r.pair.rejected]
    for pool in pools:
        prompts += [pool["prompt"]] * len(pool["replies"])
        responses += pool["replies"]
    return prompts, responses


TIMING_ROWS = 96


def embed_base(part: str, prompts: list, responses: list[str], max_length: int) -> tuple[Any, float, int, float]:
    """Base features of one backbone part through the on-disk cache; (features, seconds, rows embedded now, seconds
    per 1000 pairs measured on TIMING_ROWS rows without the cache)."""
    from paretoalign.embed.cached import embed_with_cache
    from paretoalign.embed.registry import load_backbone
    from paretoalign.rewards.armo_trainer import embedding_cache_path

    if part == "likelihood":
        from likelihood_features import LikelihoodBackbone

        backbone = LikelihoodBackbone("smollm2", max_length=max_length)
    elif part == "minilm":
        backbone = load_backbone({"kind": "sentence_encoder", "model": "minilm", "max_length": None})
    else:
        backbone = load_backbone({"kind": "causal_lm", "model": part, "max_length": max_length,
                                  "dtype": "float32"})
    cache = embedding_cache_path("auto", backbone.fingerprint)
    from paretoalign.embed.cache import EmbeddingCache, cache_key

    with EmbeddingCache(cache, fingerprint=backbone.fingerprint, feature_dim=backbone.feature_dim,
                        prompt_feature_dim=backbone.prompt_feature_dim) as store:
        keys = {cache_key(backbone.fingerprint, p, r) for p, r in zip(prompts, responses, strict=True)}
        todo = len(keys) - len(store.get_many({k: 0 for k in keys}))
    t0 = time.perf_counter()
    feats = embed_with_cache(backbone, prompts, responses, cache=cache, progress=True)
    seconds = time.perf_counter() - t0
    # The timing column: TIMING_ROWS rows embedded without the cache (first the warm-up call), seconds per 1000 pairs.
    sample_p, sample_r = prompts[:TIMING_ROWS], responses[:TIMING_ROWS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone.embed(sample_p[:4], sample_r[:4])
        t1 = time.perf_counter()
        backbone.embed(sample_p, sample_r)
    per_1k_pairs = (time.perf_counter() - t1) / len(sample_p) * 2000
    return feats, seconds, todo, per_1k_pairs


def view(part: str, name: str, resp: np.ndarray, prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A feature view of one part's base features (MiniLM: [e(y), e(x)*e(y), log(1+|y|)], h(x) = e(x))."""
    if part == "minilm":
        d = prompt.shape[1]
        e_y, xy, length = resp[:, :d], resp[:, d:2 * d], resp[:, 2 * d:]
        parts = {"y": e_y, "xy": xy, "len": length, "diff": e_y - prompt,
                 "lenx": np.concatenate([length, length ** 2 / 10.0], axis=1)}
        if name == "concat":
            name = "y+xy+len"
        return np.concatenate([parts[p] for p in name.split("+")], axis=1), prompt
    if part == "likelihood":
        return resp, prompt
    if name in ("h", "concat"):
        return resp, prompt
    if name == "h-hx":
        return np.concatenate([resp, resp - prompt], axis=1), prompt
    raise ValueError(f"unknown view {name!r} for {part}")


# ------------------------------------------------------------------------------------------------ protocols
def train_one(backbone: LookupBackbone, rows: list[Row], overrides: dict[str, Any], seed: int):
    """Train the real trainer on `rows`; (model, fit seconds)."""
    from paretoalign.data.sources import TrainingData
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model

    config = ArmoRMConfig(embedding_cache=None, progress=False, seed=seed, **overrides)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = train_reward_model(config, TrainingData([r.pair for r in rows], []), backbone=backbone)
    return model, time.perf_counter() - t0


def pair_scores(model, rows: list[Row]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Chosen / rejected scores of every scorer on `rows`."""
    from paretoalign.eval.rm_eval import reward_model_scores

    chosen, rejected, _ = reward_model_scores(model, [r.pair for r in rows], progress=False)
    return chosen, rejected


def pool_pick(model, pools: list[dict]) -> dict[str, float]:
    """Share of pools where the RM's top reply / the longest reply is the human top-ranked one, and random's rate."""
    if not pools:
        return {}
    hits_rm, hits_long, expect = [], [], []
    for pool in pools:
        out = model.score([pool["prompt"]] * len(pool["replies"]), pool["replies"])
        best = min(pool["ranks"])
        hits_rm.append(float(pool["ranks"][int(np.argmax(out.score))] == best))
        lengths = [len(r) for r in pool["replies"]]
        hits_long.append(float(pool["ranks"][int(np.argmax(lengths))] == best))
        expect.append(sum(rk == best for rk in pool["ranks"]) / len(pool["ranks"]))
    rng = np.random.default_rng(0)
    diff = np.array(hits_rm) - np.array(hits_long)
    reps = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(1000)]
    return {"n_pools": len(pools), "rm_top": float(np.mean(hits_rm)), "longest_top": float(np.mean(hits_long)),
            "random_top": float(np.mean(expect)), "rm_minus_longest": float(diff.mean()),
            "rm_minus_longest_ci": [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]}


def summarize(chosen: dict, rejected: dict, groups: list[str], seed: int) -> dict[str, Any]:
    """Per-dataset and mean accuracy with intervals for final / bt_baseline / length / best objective."""
    from paretoalign.eval.rm_eval import evaluate_score_pairs

    report = evaluate_score_pairs(chosen, rejected, groups, n_boot=1000, seed=seed)
    out: dict[str, Any] = {}
    for g in report.groups:
        if g.kind not in ("dataset", "mean"):
            continue
        cell = {}
        for metric in ("final", "bt_baseline", "length"):
            m = g.metrics[metric]
            cell[metric] = [round(m.accuracy, 4), round(m.ci[0], 4), round(m.ci[1], 4)]
        if g.best_objective:
            m = g.metrics[g.best_objective]
            cell["best_objective"] = [g.best_objective.split(":", 1)[1], round(m.accuracy, 4)]
        cell["n"] = g.n
        out["mean" if g.kind == "mean" else g.name] = cell
    return out


def run_choice(name: str, rows: list[Row], pools: list[dict], tables: dict[str, dict], train_sets: tuple[str, ...],
               seed: int) -> dict[str, Any]:
    """Both protocols for one choice."""
    parts, view_name, overrides = CHOICES[name]
    table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    first = tables[parts[0]]
    for key in first:
        pieces = [tables[p][key] for p in parts]
        resp = np.concatenate([view(p, view_name, r[None], x[None])[0][0] for p, (r, x) in zip(parts, pieces,
                                                                                              strict=True)])
        prompt = np.concatenate([x for _, x in pieces])
        table[key] = (resp, prompt)
    backbone = LookupBackbone(name, table)
    if parts == ("minilm",) and view_name == "y+xy+len":  # the sentence encoder's own layout
        d = backbone.prompt_feature_dim
        backbone.feature_layout = {"response": (0, d), "product": (d, 2 * d), "length": (2 * d, 2 * d + 1)}
        backbone.default_head_features = ("response", "product")
    train_rows = [r for r in rows if r.side == "train" and r.dataset in train_sets]
    test_rows = [r for r in rows if r.side == "test"]
    result: dict[str, Any] = {"parts": list(parts), "view": view_name, "overrides": overrides,
                              "feature_dim": backbone.feature_dim}
    model_a, fit_a = train_one(backbone, train_rows, overrides, seed)
    c, r = pair_scores(model_a, test_rows)
    result["heldout"] = summarize(c, r, [x.dataset for x in test_rows], seed)
    result["heldout_pool_pick"] = pool_pick(model_a, [p for p in pools if p["side"] == "test"])
    fits = [fit_a]
    lodo_c: dict[str, list] = defaultdict(list)
    lodo_r: dict[str, list] = defaultdict(list)
    lodo_groups: list[str] = []
    for ds in sorted({x.dataset for x in rows}):
        held = [x for x in rows if x.dataset == ds]
        if ds in train_sets:
            model, fit = train_one(backbone, [x for x in train_rows if x.dataset != ds], overrides, seed)
            fits.append(fit)
        else:
            model = model_a
        c, r = pair_scores(model, held)
        for metric in c:
            if metric in ("final", "bt_baseline", "length"):
                lodo_c[metric].append(c[metric])
                lodo_r[metric].append(r[metric])
        lodo_groups += [ds] * len(held)
        if ds == "oasst":
            result["lodo_pool_pick"] = pool_pick(model, pools)
    result["lodo"] = summarize({k: np.concatenate(v) for k, v in lodo_c.items()},
                               {k: np.concatenate(v) for k, v in lodo_r.items()}, lodo_groups, seed)
    result["fit_s_median"] = float(np.median(fits))
    return result


def _fmt(cell: list) -> str:
    return f"{cell[0]:.3f} [{cell[1]:.3f}, {cell[2]:.3f}]"


def print_table(results: dict[str, dict], embed_s: dict[str, float], protocol: str) -> None:
    """One line per choice: mean final / BT / length with intervals, per-dataset final, timings."""
    datasets = sorted({d for res in results.values() for d in res[protocol] if d != "mean"})
    print(f"\n== {protocol}: mean over {len(datasets)} datasets (final, BT baseline, length), per-dataset final")
    print(f"{'choice':26s} {'final':>22s} {'bt_baseline':>22s} {'length':>22s}  "
          + " ".join(f"{d[:8]:>8s}" for d in datasets) + "  embed_s/1k  fit_s")
    for name, res in results.items():
        mean = res[protocol]["mean"]
        per = " ".join(f"{res[protocol][d]['final'][0]:8.3f}" for d in datasets)
        emb = sum(math.nan if embed_s.get(p) is None else embed_s[p] for p in res["parts"])
        print(f"{name:26s} {_fmt(mean['final']):>22s} {_fmt(mean['bt_baseline']):>22s} {_fmt(mean['length']):>22s}  "
              f"{per}  {emb:10.1f}  {res['fit_s_median']:5.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared-dir", default=str(DEFAULT_SHARED))
    ap.add_argument("--choices", default="full",
                    help="'full' (MiniLM levers on every pair), 'sub' (backbones and likelihood on a subsample) or a "
                         f"comma-separated list of {', '.join(CHOICES)}")
    ap.add_argument("--sub-train", type=int, default=60, help="train-side pairs per dataset in the subsample")
    ap.add_argument("--sub-test", type=int, default=40, help="test-side pairs per dataset in the subsample")
    ap.add_argument("--train-sets", default=",".join(PERMISSIVE))
    ap.add_argument("--max-length", type=int, default=256, help="token budget of the causal-LM parts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "rm_quality.json"))
    ap.add_argument("--resume", action="store_true",
                    help="keep the choices already in --output (same data and split) and run only the others")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from paretoalign.threads import configure_threads

    configure_threads("auto")
    shared = Path(args.shared_dir)
    rows = load_rows(shared)
    pools = load_pools(shared)
    if args.choices == "full":
        names, use_sub = list(FULL_CHOICES), False
    elif args.choices == "sub":
        names, use_sub = list(SUB_CHOICES), True
    else:
        names = [c.strip() for c in args.choices.split(",") if c.strip()]
        unknown = [c for c in names if c not in CHOICES]
        if unknown:
            ap.error(f"unknown choices {unknown}; known: {', '.join(CHOICES)}")
        use_sub = any(p != "minilm" for c in names for p in CHOICES[c][0])
    if use_sub:
        rows = subsample(rows, args.sub_train, args.sub_test, args.seed)
        pool_prompts = {json.dumps(r.pair.prompt, sort_keys=True) for r in rows if r.dataset == "oasst"}
        pools = [p for p in pools if json.dumps(p["prompt"], sort_keys=True) in pool_prompts]
    train_sets = tuple(s for s in args.train_sets.split(",") if s)
    print(f"{len(rows)} pairs ({'subsample' if use_sub else 'all'}), {len(pools)} OASST pools, "
          f"training datasets {train_sets}", flush=True)
    prompts, responses = _texts(rows, pools)
    keys = [_key(p, r) for p, r in zip(prompts, responses, strict=True)]
    tables: dict[str, dict] = {}
    embed_s: dict[str, float] = {}
    n_pairs = len(rows)
    for part in sorted({p for c in names for p in CHOICES[c][0]}):
        feats, seconds, todo, per_1k = embed_base(part, prompts, responses, args.max_length)
        tables[part] = {k: (feats.response[i], feats.prompt[i]) for i, k in enumerate(keys)}
        embed_s[part] = per_1k
        print(f"{part}: {feats.response.shape[1]}-dim features, {todo} rows embedded now in {seconds:.0f} s",
              flush=True)
    path = Path(args.output)
    if use_sub and path.name == "rm_quality.json":
        path = path.with_name("rm_quality_sub.json")
    results: dict[str, Any] = {}
    if args.resume and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("n_pairs") == n_pairs and old.get("train_sets") == list(train_sets):
            results = dict(old.get("choices", {}))
            embed_s = {**old.get("embed_s_per_1k_pairs", {}), **{k: v for k, v in embed_s.items()
                                                                 if not math.isnan(v)}}
    from paretoalign.atomic_io import write_json_atomic

    for name in names:
        if name in results:
            continue
        t0 = time.perf_counter()
        results[name] = run_choice(name, rows, pools, tables, train_sets, args.seed)
        res = results[name]
        print(f"{name}: held-out final {res['heldout']['mean']['final'][0]:.3f} length "
              f"{res['heldout']['mean']['length'][0]:.3f} | LODO final {res['lodo']['mean']['final'][0]:.3f} length "
              f"{res['lodo']['mean']['length'][0]:.3f} | pool pick {res.get('lodo_pool_pick', {}).get('rm_top')} vs "
              f"longest {res.get('lodo_pool_pick', {}).get('longest_top')} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"n_pairs": n_pairs, "subsample": use_sub, "train_sets": list(train_sets),
                                 "embed_s_per_1k_pairs": embed_s, "choices": results, "argv": sys.argv[1:]})
    print_table(results, embed_s, "heldout")
    print_table(results, embed_s, "lodo")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
