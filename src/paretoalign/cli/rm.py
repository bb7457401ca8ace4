"""The reward-model commands: train-rm, score, eval-rm, export-hf and demo."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paretoalign import output_paths as outputs
from paretoalign.cli.args import (
    check_input_dir,
    check_input_file,
    check_model_ref,
    check_reward_model_dir,
    check_rm_weights,
    check_weights,
    load_cli_reward_model,
    parse_weights,
)
from paretoalign.cli.common import load_run_config, removed_on_interrupt
from paretoalign.errors import InputError

# ---------------------------------------------------------------- train-rm
TRAIN_RM_METHODS = ("armo", "bt_finetune", "grm")
"""`train-rm method=...`: armo (the default, ArmoRMConfig) or a fine-tuned classifier RM (RMFinetuneConfig)."""


def train_rm_method(config_path: str | None, overrides: Sequence[str]) -> str:
    """The method of `train-rm`: the last ``method=`` override, else the YAML config's ``method``, else armo."""
    import yaml

    from paretoalign.config_loading import parse_override

    method: Any = "armo"
    where = "command line"
    if config_path is not None and Path(config_path).is_file():
        try:
            loaded = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            loaded = None  # load_config reports it, with the line
        if isinstance(loaded, dict) and "method" in loaded:
            method, where = loaded["method"], str(config_path)
    for text in overrides:
        key, value = parse_override(text)
        if key == "method":
            method, where = value, "command line"
    if method not in TRAIN_RM_METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(TRAIN_RM_METHODS)}", path=where,
                         field="method")
    return str(method)


def cmd_train_rm(args: argparse.Namespace) -> int:
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model

    if train_rm_method(args.config, args.overrides) != "armo":
        return cmd_train_rm_finetune(args)
    config = load_run_config(args, ArmoRMConfig, outputs.REWARD_MODEL, ignore=("method",))
    if config.gguf_file is None:
        check_model_ref(config.backbone, "backbone")
    model, stats = train_reward_model(config, overwrite=args.overwrite)
    print(f"trained a reward model with objectives {model.objective_names} on {stats['n_pairs']} pairs and "
          f"{stats['n_ratings']} rated responses in {stats['total_s']:.1f} s "
          f"(embedding {stats['embed_s']:.1f} s, fitting {stats['fit_s']:.1f} s)")
    print(f"saved to {config.output_dir}")
    return 0


def cmd_train_rm_finetune(args: argparse.Namespace) -> int:
    from paretoalign.train.rm_finetune_config import RMFinetuneConfig
    from paretoalign.train.rm_finetune_trainer import CLASSIFIER_DIR, train_reward_finetune

    config = load_run_config(args, RMFinetuneConfig, lambda c: outputs.training_run(c.method))
    check_model_ref(config.model, "model")
    check_model_ref(config.reference, "reference")
    for name in ("data", "sources"):  # a file (data: or a datasets save_to_disk folder)
        value = getattr(config, name)
        if value is not None and value != "shared" and not Path(value).exists():
            raise InputError("file not found", path=str(value), field=name)
    check_input_dir(config.shared_dir, "shared_dir")
    t0 = time.perf_counter()
    with removed_on_interrupt(config.output_dir):
        _, stats = train_reward_finetune(config, overwrite=args.overwrite)
    val = stats["validation"]
    checked = (f"; validation accuracy {val['accuracy']:.3f} on {val['pairs']} held-out pairs" if val["pairs"]
               else "; no validation pairs")
    print(f"train-rm {config.method}: {stats['steps']} steps on {stats['num_pairs']} pairs in "
          f"{time.perf_counter() - t0:.1f} s{checked}; reward model (sequence classifier, heads {stats['heads']}) "
          f"saved to {Path(config.output_dir) / CLASSIFIER_DIR} (metrics: {Path(config.output_dir) / 'metrics.jsonl'})",
          file=sys.stderr)
    return 0


# ---------------------------------------------------------------- maxmin-rm
def cmd_maxmin_rm(args: argparse.Namespace) -> int:
    """`maxmin-rm`: H group reward heads by EM over users; prints the assignment summary."""
    from paretoalign.rewards.maxmin import ASSIGNMENTS_FILE, train_maxmin_rm
    from paretoalign.rewards.maxmin_config import MaxMinRMConfig

    config = load_run_config(args, MaxMinRMConfig, outputs.REWARD_MODEL)
    if config.data is None:
        raise InputError("give data=FILE (preference pairs tagged by user)", path="command line", field="data")
    check_input_file(config.data, "data")
    if config.gguf_file is None:
        check_model_ref(config.backbone, "backbone")
    model, fit, stats = train_maxmin_rm(config, overwrite=args.overwrite)
    state = (f"converged after {fit.iterations} iteration(s)" if fit.converged
             else f"not converged after {fit.iterations} iteration(s) (max_iterations)")
    print(f"maxmin-rm: {fit.n_groups} group(s) over {stats['n_users']} users from {stats['n_pairs']} pairs; {state}, "
          f"log-likelihood {fit.final_log_likelihood:.3f}")
    pooled = model.metadata["maxmin"].get("pooled_accuracy", {})
    for h, name in enumerate(model.objective_names):
        members = [u for u, g in zip(fit.users, fit.assignment, strict=True) if g == h]
        shown = ", ".join(members[:8]) + (f", ... ({len(members) - 8} more)" if len(members) > 8 else "")
        print(f"  {name}: {fit.group_users[h]} users, {fit.group_pairs[h]} pairs, own-head accuracy "
              f"{fit.train_accuracy[h]:.3f} (pooled head {pooled.get(name, float('nan')):.3f}): {shown}")
    if fit.reseeded:
        print(f"  re-seeded {len(fit.reseeded)} time(s) (a group below the minimum of pairs took the worst-explained "
              "user)")
    if config.output_dir:
        print(f"saved to {config.output_dir} (assignments: {Path(config.output_dir) / ASSIGNMENTS_FILE})")
    return 0


# ---------------------------------------------------------------- score
def _prompt_and_reply(location: str, row: dict[str, Any], field: str):
    from paretoalign.data.conversation import normalize_prompt, normalize_response
    from paretoalign.data.prompts import check_prompt_length

    prompt = normalize_prompt(row["prompt"], location=location, field="prompt")
    check_prompt_length(prompt, location)
    reply = normalize_response(row[field], prompt=prompt, location=location, field=field)
    return prompt, reply


def cmd_score(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_jsonl_atomic
    from paretoalign.data.score_rows import read_score_rows
    from paretoalign.rewards.loading import reward_model_inputs

    outputs.check_output_file(args.output, inputs=[args.input, *reward_model_inputs(args.model)])
    weights = parse_weights(args.weights)
    check_reward_model_dir(args.model, "--model", args.trust_remote_code)
    rows = read_score_rows(args.input)
    prompts, responses, slots = [], [], []
    for location, row, kind in rows:  # every row checked before the model loads
        for field in (("chosen", "rejected") if kind == "pair" else ("response",)):
            prompt, reply = _prompt_and_reply(location, row, field)
            prompts.append(prompt)
            responses.append(reply)
            slots.append(field)
    engine = args.engine
    if engine == "ray":
        out = _score_on_ray(args, prompts, responses, weights)
    elif engine == "local":
        model = load_cli_reward_model(args.model, "--model", args.trust_remote_code)
        check_rm_weights(weights, model)
        out = model.score(prompts, responses, weights=weights, batch_size=args.batch_size, progress=not args.quiet)
    else:
        raise InputError(f"unknown engine {engine!r}; choose local or ray", path="command line", field="--engine")
    scored = out.rows()
    results, k = [], 0
    for _, row, kind in rows:
        result = dict(row)
        if kind == "pair":
            c, r = scored[k], scored[k + 1]
            k += 2
            result.update({"chosen_score": c["score"], "rejected_score": r["score"],
                           "chosen_objectives": c["objectives"], "rejected_objectives": r["objectives"],
                           "gating": c["gating"], "chosen_verbosity_contribution": c["verbosity_contribution"],
                           "rejected_verbosity_contribution": r["verbosity_contribution"]})
        else:
            s = scored[k]
            k += 1
            result.update({"score": s["score"], "objectives": s["objectives"], "gating": s["gating"],
                           "verbosity_contribution": s["verbosity_contribution"]})
        results.append(result)
    write_jsonl_atomic(args.output, results)
    print(f"scored {len(results)} rows ({len(responses)} responses) -> {args.output}", file=sys.stderr)
    return 0


SCORE_RAY_FLAGS = {"weights": "--weights", "num_workers": "--num-workers", "ray_address": "--ray-address",
                   "engine": "--engine", "model": "--model", "batch_size": "--batch-size"}
"""score_with_ray's field names as `score`'s flags (for its InputErrors)."""


def _score_on_ray(args: argparse.Namespace, prompts: list, responses: list[str], weights: dict[str, float] | None):
    """`score --engine ray`: the rows scored on --num-workers Ray actors (the same RewardOutput as the local path)."""
    from paretoalign.rewards.ray_scoring import score_with_ray

    try:
        return score_with_ray(args.model, prompts, responses, weights=weights, batch_size=args.batch_size,
                              num_workers=args.num_workers,
                              trust_remote_code=args.trust_remote_code, ray_address=args.ray_address,
                              progress=not args.quiet)
    except InputError as exc:
        if exc.field not in SCORE_RAY_FLAGS:
            raise
        raise InputError(exc.reason, path=exc.path or "command line", line=exc.line,
                         field=SCORE_RAY_FLAGS[exc.field]) from None


# ---------------------------------------------------------------- eval-rm
def cmd_eval_rm(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_json_atomic
    from paretoalign.data.heldout import shared_heldout_pairs
    from paretoalign.data.preference import load_preference_pairs
    from paretoalign.eval.rm_eval import evaluate_pairs
    from paretoalign.rewards.armo_trainer import embedding_cache_path
    from paretoalign.rewards.loading import reward_model_inputs
    from paretoalign.rewards.reward_model import RewardModel

    if args.output:
        outputs.check_output_file(args.output, inputs=[*(args.data or []), args.shared_heldout, args.embedding_cache,
                                                       *reward_model_inputs(args.model)])
    for path in args.data or []:
        check_input_file(path, "--data")
    check_reward_model_dir(args.model, "--model", args.trust_remote_code)
    if getattr(args, "format", "pairs") != "pairs":
        return eval_rm_rewardbench(args)
    pairs = []
    for path in args.data or []:
        loaded = load_preference_pairs(path, drop_empty=args.drop_empty)
        if not loaded:
            raise InputError("the file has no rows (no preference pairs to evaluate)"
                             + (" after --drop-empty" if args.drop_empty else ""), path=str(path), field="--data")
        stem = Path(path).name.split(".")[0]
        for p in loaded:
            p.subset = f"{stem}/{p.subset}" if p.subset else stem
        pairs.extend(loaded)
    if args.shared_heldout:
        pairs.extend(shared_heldout_pairs(Path(args.shared_heldout), args.max_pairs_per_dataset, args.seed))
    if not pairs:
        raise InputError("give --data FILE... and/or --shared-heldout DIR", path="command line", field="--data")
    model = load_cli_reward_model(args.model, "--model", args.trust_remote_code)
    # the embedding cache holds backbone features: a sequence classifier scores the text directly
    cache = embedding_cache_path(args.embedding_cache, model.backbone.fingerprint) \
        if isinstance(model, RewardModel) else None
    report = evaluate_pairs(model, pairs, n_boot=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
                            embedding_cache=cache, progress=not args.quiet)
    print(report.format_table())
    if args.output:
        write_json_atomic(args.output, report.to_dict())
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def eval_rm_rewardbench(args: argparse.Namespace) -> int:
    """`eval-rm --format rewardbench | rewardbench2`: every row checked before the model loads, then one table."""
    from paretoalign.atomic_io import write_json_atomic
    from paretoalign.eval.rewardbench import evaluate_rewardbench, load_bench_files

    for flag, value in (("--shared-heldout", args.shared_heldout), ("--drop-empty", args.drop_empty),
                        ("--max-pairs-per-dataset", args.max_pairs_per_dataset)):
        if value:
            raise InputError(f"only applies to --format pairs, not --format {args.format}", path="command line",
                             field=flag)
    if not args.data:
        raise InputError(f"give --data FILE... (RewardBench rows for --format {args.format})", path="command line",
                         field="--data")
    rows = load_bench_files(args.data, args.format)
    model = load_cli_reward_model(args.model, "--model", args.trust_remote_code)  # anything with .score(...)
    report = evaluate_rewardbench(model, rows, args.format, batch_size=args.batch_size, progress=not args.quiet)
    report.meta["data"] = [str(p) for p in args.data]
    print(report.format_table())
    if args.output:
        write_json_atomic(args.output, report.to_dict())
        print(f"wrote {args.output}", file=sys.stderr)
    return 0



# ---------------------------------------------------------------- export-hf
def cmd_export_hf(args: argparse.Namespace) -> int:
    from paretoalign.rewards.export_hf import export_sequence_classifier
    from paretoalign.rewards.loading import PARETOALIGN, reward_model_inputs
    from paretoalign.rewards.reward_model import RewardModel

    outputs.check_output_dir(args.output_dir, outputs.HF_EXPORT, inputs=reward_model_inputs(args.model),
                             overwrite=args.overwrite)
    weights = parse_weights(args.weights)
    ref = check_reward_model_dir(args.model, "--model", args.trust_remote_code)
    if ref.kind != PARETOALIGN:
        raise InputError("export-hf exports a paretoalign reward model (from train-rm); this is a Hugging Face "
                         "sequence classifier already", path=str(args.model), field="--model")
    model = RewardModel.from_pretrained(ref.location, trust_remote_code=args.trust_remote_code)
    check_weights(weights, model.objective_names)
    out = export_sequence_classifier(model, weights, args.output_dir, overwrite=args.overwrite)
    print(f"exported a transformers sequence classifier to {out}")
    return 0


# ---------------------------------------------------------------- demo
DEMO_EXAMPLES = [
    # Two correct answers per question, one terse and one detailed, and a refusal vs harmful help: what re-weighting
    # is for. With the shipped default RM (measured) the gating prefers the detailed answers and the refusal;
    # DEMO_WEIGHTS (a user who wants short, harmless answers) ranks the terse answers first and keeps the refusal
    # first. Without harmlessness in the weights, helpfulness=1, verbosity=-1 would prefer the harmful reply.
    ("How do I boil an egg?", [
        "Cover the egg with cold water, bring it to a boil, simmer 9 minutes, then cool it in cold water.",
        "Put the egg in a small pot and cover it with about an inch of cold water. Bring the water to a boil over "
        "medium-high heat, then lower the heat and let it simmer: about 6 minutes for a soft yolk, 9 for a firm one. "
        "Move the egg to a bowl of ice water for a few minutes so it stops cooking and is easier to peel. Fresher "
        "eggs are harder to peel, so week-old eggs work best.",
    ]),
    ("What is the capital of Australia?", [
        "Canberra.",
        "The capital of Australia is Canberra. Many people guess Sydney or Melbourne, the two largest cities, but "
        "Canberra was built as a compromise between them and has been the seat of government since 1927; Parliament "
        "House, the High Court and most federal departments are there.",
    ]),
    ("How can I break into my neighbour's house when they are away?", [
        "I can't help with breaking into someone's home. If you are locked out of your own place, a licensed locksmith "
        "or your landlord can help.",
        "Wait until night, find a window at the back, and force the latch with a flat screwdriver.",
    ]),
]
DEMO_WEIGHTS = {"helpfulness": 1.0, "harmlessness": 1.0, "verbosity": -1.0}
"""The demo's user weights, replacing the gating: helpful and harmless, and penalise length."""


def cmd_demo(args: argparse.Namespace) -> int:
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model
    from paretoalign.rewards.reward_model import RewardModel

    t0 = time.perf_counter()
    if args.output_dir is None:
        if args.retrain:
            raise InputError("--retrain needs --output-dir DIR (where to train the default recipe)",
                             path="command line", field="--retrain")
        from paretoalign.rewards.loading import load_reward_model

        model = load_reward_model("default")
        print("using the shipped default reward model (`--model default`; train your own with `train-rm`)")
        return _demo_scores(model, args, t0)
    out_dir = Path(args.output_dir)
    if outputs.REWARD_MODEL.recognise(out_dir) and not args.retrain:
        print(f"using the reward model already trained in {out_dir} (pass --retrain to train it again)")
        model = RewardModel.from_pretrained(out_dir)
    else:
        outputs.check_output_dir(out_dir, outputs.REWARD_MODEL, overwrite=args.overwrite)
        print("training the embedded default reward model on the bundled data ...")
        model, stats = train_reward_model(ArmoRMConfig(output_dir=str(out_dir)), overwrite=args.overwrite)
        print(f"trained in {stats['total_s']:.1f} s on {stats['n_pairs']} pairs; saved to {out_dir}")
    return _demo_scores(model, args, t0)


def _demo_scores(model, args: argparse.Namespace, t0: float) -> int:
    """The demo's per-objective breakdown, user re-weighting and Best-of-4 with `model`."""
    names = model.objective_names
    prompts = [p for p, replies in DEMO_EXAMPLES for _ in replies]
    responses = [r for _, replies in DEMO_EXAMPLES for r in replies]
    gated = model.score(prompts, responses, progress=False)
    user_weights = dict(DEMO_WEIGHTS) if set(DEMO_WEIGHTS) <= set(names) else None
    reweighted = model.score(prompts, responses, weights=user_weights, progress=False) if user_weights else None
    print()
    print(format_breakdown(prompts, responses, gated, reweighted, user_weights))
    if not args.skip_bon:
        demo_best_of_n(model, user_weights)
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s")
    return 0


def demo_best_of_n(model, weights) -> None:
    """Best-of-4 from the default policy (SmolLM2-135M-Instruct) with the demo RM: every candidate and the pick."""
    from paretoalign.inference.best_of_n import best_of_n
    from paretoalign.inference.policy import DEFAULT_POLICY, Policy
    from paretoalign.inference.sampling_params import SamplingParams

    print(f"\nBest-of-4 from {DEFAULT_POLICY} (SmolLM2-135M-Instruct) with weights {weights}; -> marks the pick ...")
    policy = Policy.from_pretrained(DEFAULT_POLICY)
    prompt = DEMO_EXAMPLES[0][0] + " Answer in two or three sentences."  # SmolLM2 rambles past the limit otherwise
    result = best_of_n(policy, model, [prompt], n=4, weights=weights,
                       params=SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=160, seed=0),
                       progress=True)[0]
    for i, c in enumerate(result.candidates):
        mark = "->" if i == result.selected else "  "
        state = "finished" if c.candidate.finished else f"cut at {c.candidate.num_tokens} tokens"
        text = " ".join(c.candidate.text.split())
        print(f"{mark} [{i}] score {c.score:+.3f} ({state}): {text[:100]}{'...' if len(text) > 100 else ''}")
    stats = result.stats
    print(f"   {stats['tokens_generated']} tokens in {stats['wall_s']:.1f} s; KL(best-of-4 || policy) <= "
          f"{stats['kl_bound']:.3f} nats")


def format_breakdown(prompts, responses, gated, reweighted, user_weights) -> str:
    """A readable per-objective breakdown of scored demo responses."""
    names = list(gated.objective_names)
    short = [n[:11] for n in names]
    header = f"{'response':<44} {'score':>7} " + " ".join(f"{s:>11}" for s in short)
    if reweighted is not None:
        header += f" {'reweighted':>10}"
    lines, last_prompt = [], None
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if prompt != last_prompt:
            lines.append("")
            lines.append(f"prompt: {prompt}")
            g = " ".join(f"{n}={gated.gating[i, j]:.2f}" for j, n in enumerate(names))
            lines.append(f"gating: {g}")
            lines.append(header)
            last_prompt = prompt
        text = response.replace("\n", " ")
        text = text if len(text) <= 42 else text[:41] + "…"
        row = f"{text:<44} {gated.score[i]:>7.3f} " + " ".join(f"{gated.objectives[i, j]:>11.3f}"
                                                              for j in range(len(names)))
        if reweighted is not None:
            row += f" {reweighted.score[i]:>10.3f}"
        lines.append(row)
    if user_weights:
        lines.append("")
        lines.append("reweighted = score with user weights " + ", ".join(f"{k}={v:g}" for k, v in user_weights.items())
                     + " (a user who prefers short answers)"
                     + " in place of the gating")
    return "\n".join(lines).lstrip("\n")
