"""The `paretoalign` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoalign import output_paths as outputs
from paretoalign.errors import InputError, ModelFormatError

if TYPE_CHECKING:  # the commands import these when they run (nothing heavy at start-up)
    from paretoalign.rewards.loading import RewardModelReference, ScoringRewardModel

DEBUG_ENV = "PARETOALIGN_DEBUG"
"""PARETOALIGN_DEBUG=1 shows the full traceback of an error, like --debug."""
DEBUG_HELP = "On an error, print the full Python traceback too (also: PARETOALIGN_DEBUG=1)."
RM_REFERENCE_HELP = ("Reward model: a folder from train-rm, `default` (the shipped one), or a Hugging Face "
                     "sequence-classification folder or hub id (one objective per label).")


# ---------------------------------------------------------------- argparse value checks
# argparse names the flag in its error ("argument --batch-size: must be an integer >= 1, got '0'") and exits 2
# before any work; the flags below use these instead of a bare int / float.
def _checked_number(kind: type, what: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse `type=` that parses `kind` and accepts only finite values for which `ok(value)` holds."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__doc__ = f"{what[0].upper()}{what[1:]}."
    return parse


positive_int = _checked_number(int, "an integer >= 1", lambda v: v >= 1)
non_negative_int = _checked_number(int, "an integer >= 0", lambda v: v >= 0)
non_negative_float = _checked_number(float, "a finite number >= 0", lambda v: v >= 0)
positive_float = _checked_number(float, "a finite number > 0", lambda v: v > 0)
probability = _checked_number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
unit_fraction = _checked_number(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def check_input_file(path: str | None, field: str) -> None:
    """InputError naming `field` unless `path` is an existing file (None: not given, nothing to check)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; expected a file", path=str(path), field=field)
    if not p.exists():
        raise InputError("file not found", path=str(path), field=field)


def check_input_dir(path: str | None, field: str, what: str = "folder") -> None:
    """InputError naming `field` unless `path` is an existing folder (None: not given)."""
    if path is None:
        return
    p = Path(path)
    if p.is_file():
        raise InputError(f"is a file; expected a {what}", path=str(path), field=field)
    if not p.is_dir():
        raise InputError(f"no such {what}", path=str(path), field=field)


def check_model_ref(ref: str | None, field: str) -> None:
    """Before any model loads: InputError naming `field` for a model reference that is a missing path, a file that
    is not a .gguf, a folder holding no model, or a folder with an unreadable safetensors file. Aliases and hub
    ids pass (their loaders report them)."""
    if ref is None:
        return
    from paretoalign.embed.models import ALIASES, check_model_files

    text = str(ref)
    path = Path(text).expanduser()
    if text in ALIASES and not path.exists():
        return
    if path.is_dir():
        check_model_files(path)
    elif path.is_file():
        if path.suffix != ".gguf":
            raise InputError("is a file, not a model folder (nor a .gguf file)", path=text, field=field)
    elif text.startswith(("/", "./", "../", "~")) or path.suffix == ".gguf":
        raise InputError("no such model folder or file", path=text, field=field)


def parse_weights(text: str | None) -> dict[str, float] | None:
    """Parse `name=value,name=value` into a weight dict (None when not given)."""
    if text is None:
        return None
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InputError(f"expected name=value, got {part!r}", path="command line", field="--weights")
        name, raw = (s.strip() for s in part.split("=", 1))
        try:
            value = float(raw)
        except ValueError as exc:
            raise InputError(f"weight of {name!r} is not a number: {raw!r}", path="command line",
                             field="--weights") from exc
        if not math.isfinite(value):
            raise InputError(f"weight of {name!r} must be finite", path="command line", field="--weights")
        if name in weights:
            raise InputError(f"weight of {name!r} given twice", path="command line", field="--weights")
        weights[name] = value
    if not weights:
        raise InputError("no weights given", path="command line", field="--weights")
    return weights


def check_weights(weights: dict[str, float] | None, objective_names: Sequence[str]) -> None:
    """Raise InputError naming any weight whose objective the model does not have."""
    if weights is None:
        return
    unknown = [k for k in weights if k not in objective_names]
    if unknown:
        raise InputError(f"unknown objective(s) {unknown}; this model has {list(objective_names)}",
                         path="command line", field="--weights")


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
    from paretoalign.config_loading import load_config
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model

    if train_rm_method(args.config, args.overrides) != "armo":
        return cmd_train_rm_finetune(args)
    config = load_config(ArmoRMConfig, args.config, args.overrides, ignore=("method",), output_dir=args.output_dir)
    outputs.check_output_dir(config.output_dir, outputs.REWARD_MODEL, overwrite=args.overwrite,
                             inputs=[args.config, *outputs.config_input_paths(config)])
    if config.gguf_file is None:
        check_model_ref(config.backbone, "backbone")
    model, stats = train_reward_model(config, overwrite=args.overwrite)
    print(f"trained a reward model with objectives {model.objective_names} on {stats['n_pairs']} pairs and "
          f"{stats['n_ratings']} rated responses in {stats['total_s']:.1f} s "
          f"(embedding {stats['embed_s']:.1f} s, fitting {stats['fit_s']:.1f} s)")
    print(f"saved to {config.output_dir}")
    return 0


def cmd_train_rm_finetune(args: argparse.Namespace) -> int:
    from paretoalign.config_loading import load_config
    from paretoalign.train.rm_finetune_config import RMFinetuneConfig
    from paretoalign.train.rm_finetune_trainer import CLASSIFIER_DIR, train_reward_finetune

    config = load_config(RMFinetuneConfig, args.config, args.overrides, output_dir=args.output_dir)
    outputs.check_output_dir(config.output_dir, outputs.training_run(config.method), overwrite=args.overwrite,
                             inputs=[args.config, *outputs.config_input_paths(config)])
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


# ---------------------------------------------------------------- score
def read_score_rows(path: str) -> list[tuple[str, dict[str, Any], str]]:
    """Rows of a scoring input with their location and kind ('single' or 'pair')."""
    from paretoalign.data.records import location_error, read_records

    rows = []
    for location, row in read_records(path):
        is_pair = "chosen" in row or "rejected" in row
        required = ("prompt", "chosen", "rejected") if is_pair else ("prompt", "response")
        for key in required:
            if key not in row:
                raise location_error("missing field", location, key)
        rows.append((location, row, "pair" if is_pair else "single"))
    if not rows:
        raise InputError("no rows to score", path=path)
    return rows


def _prompt_and_reply(location: str, row: dict[str, Any], field: str):
    from paretoalign.data.conversation import normalize_prompt, normalize_response
    from paretoalign.data.prompts import check_prompt_length

    prompt = normalize_prompt(row["prompt"], location=location, field="prompt")
    check_prompt_length(prompt, location)
    reply = normalize_response(row[field], prompt=prompt, location=location, field=field)
    return prompt, reply


def cmd_score(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_jsonl_atomic

    outputs.check_output_file(args.output, inputs=[args.input, *outputs.reward_model_inputs(args.model)])
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
    model = load_cli_reward_model(args.model, "--model", args.trust_remote_code)
    check_rm_weights(weights, model)
    out = model.score(prompts, responses, weights=weights, batch_size=args.batch_size, progress=not args.quiet)
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


# ---------------------------------------------------------------- eval-rm
def cmd_eval_rm(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_json_atomic
    from paretoalign.data.preference import load_preference_pairs
    from paretoalign.eval.rm_eval import evaluate_pairs
    from paretoalign.rewards.armo_trainer import embedding_cache_path
    from paretoalign.rewards.reward_model import RewardModel

    if args.output:
        outputs.check_output_file(args.output, inputs=[*(args.data or []), args.shared_heldout, args.embedding_cache,
                                                       *outputs.reward_model_inputs(args.model)])
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


def shared_heldout_pairs(shared_dir: Path, max_per_dataset: int | None, seed: int):
    """The held-out ("test") side of every pairwise dataset in the shared data folder."""
    import random

    from paretoalign.data.sources import load_training_data, shared_data_config
    from paretoalign.data.splits import split_pairs

    config = shared_data_config(shared_dir)
    data = load_training_data(config)
    _, test = split_pairs(data.pairs, config.heldout_fraction, config.seed)
    if max_per_dataset is None:
        return test
    by_dataset: dict[str, list] = {}
    for p in test:
        by_dataset.setdefault((p.subset or "").split("/")[0], []).append(p)
    rng = random.Random(seed)
    picked = []
    for name in sorted(by_dataset):
        group = by_dataset[name]
        picked.extend(group if len(group) <= max_per_dataset else rng.sample(group, max_per_dataset))
    return picked


# ---------------------------------------------------------------- export-hf
def cmd_export_hf(args: argparse.Namespace) -> int:
    from paretoalign.rewards.export_hf import export_sequence_classifier
    from paretoalign.rewards.loading import PARETOALIGN
    from paretoalign.rewards.reward_model import RewardModel

    outputs.check_output_dir(args.output_dir, outputs.HF_EXPORT, inputs=outputs.reward_model_inputs(args.model),
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


# ---------------------------------------------------------------- bon / calibrate
def sampling_params_from_args(args: argparse.Namespace):
    """SamplingParams from the shared sampling flags."""
    from paretoalign.inference.sampling_params import SamplingParams

    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          max_new_tokens=args.max_new_tokens, stop=tuple(args.stop or ()), seed=args.seed)


def parse_int_list(text: str | None, field: str) -> list[int] | None:
    """'16,32,64' -> [16, 32, 64]."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise InputError(f"expected comma-separated integers, got {text!r}", field=field) from exc


def load_generation_inputs(args: argparse.Namespace):
    """Prompt rows, policy and reward model of `bon` / `calibrate`, input checked before any model loads."""
    from paretoalign.data.prompts import read_prompts
    from paretoalign.inference.policy import Policy

    outputs.check_output_file(args.output, inputs=[args.prompts, args.policy, getattr(args, "reference", None),
                                                   *outputs.reward_model_inputs(args.rm)])
    check_input_file(args.prompts, "--prompts")
    check_reward_model_dir(args.rm, "--rm", args.trust_remote_code)
    check_model_ref(args.policy, "--policy")
    check_model_ref(getattr(args, "reference", None), "--reference")
    rows = read_prompts(args.prompts)
    weights = parse_weights(args.weights)
    params = sampling_params_from_args(args)
    reward_model = load_cli_reward_model(args.rm, "--rm", args.trust_remote_code)
    check_rm_weights(weights, reward_model)
    policy = Policy.from_pretrained(args.policy, trust_remote_code=args.trust_remote_code)
    check_prompts_fit(policy.tokenizer, policy.context_length, rows, params.max_new_tokens)
    return rows, weights, params, policy, reward_model


def check_prompts_fit(tokenizer: Any, context_length: int | None, rows, max_new_tokens: int) -> None:
    """Before sampling: InputError naming the file and line of the first prompt that leaves the model no room for
    `max_new_tokens` tokens."""
    from paretoalign.data.records import location_error
    from paretoalign.inference.policy import encode_prompts

    for r in rows:
        try:
            encode_prompts(tokenizer, context_length, [r.messages], max_new_tokens)
        except InputError as exc:
            raise location_error(exc.reason.replace("prompt 0 is", "the prompt is"), r.location, "prompt") from None


def cmd_bon(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_jsonl_atomic
    from paretoalign.inference.best_of_n import best_of_n
    from paretoalign.inference.speculative import check_rejection_rate, speculative_rejection
    from paretoalign.inference.statistics import check_n

    check_n(args.n)  # fail before loading any model
    check_rejection_rate(args.rejection_rate)
    decision = parse_int_list(args.decision_tokens, "decision_tokens")
    rows, weights, params, policy, reward_model = load_generation_inputs(args)
    reference = None
    if args.reference:
        from paretoalign.inference.policy import Policy

        reference = Policy.from_pretrained(args.reference, trust_remote_code=args.trust_remote_code)
    common = dict(n=args.n, weights=weights, select=args.select, params=params, batch_rows=args.batch_rows,
                  progress=not args.quiet)
    prompts = [r.messages for r in rows]
    t0 = time.perf_counter()
    if args.method == "speculative":
        results = speculative_rejection(policy, reward_model, prompts, rejection_rate=args.rejection_rate,
                                        decision_tokens=decision, **common)
    else:
        results = best_of_n(policy, reward_model, prompts, reference=reference, **common)
    out_rows = []
    for r, res in zip(rows, results, strict=True):
        out = dict(r.row)
        out.update(res.row())
        out_rows.append(out)
    write_jsonl_atomic(args.output, out_rows)
    picked = sum(res.selected is not None for res in results)
    tokens = sum(res.stats["tokens_generated"] for res in results)
    print(f"{args.method}: {len(results)} prompts, N={args.n}, {picked} with a finished pick, {tokens} tokens "
          f"generated in {time.perf_counter() - t0:.1f} s -> {args.output}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from paretoalign.inference.calibration import calibrate_prompts

    rows, weights, params, policy, reward_model = load_generation_inputs(args)
    t0 = time.perf_counter()
    table = calibrate_prompts(policy, reward_model, [r.messages for r in rows], m=args.m, weights=weights,
                              params=params, prompt_ids=[r.prompt_id for r in rows], rm_name=str(args.rm),
                              batch_rows=args.batch_rows, progress=not args.quiet)
    table.save(args.output)
    print(f"calibration: {len(table)} prompts x M={args.m} reference rewards in {time.perf_counter() - t0:.1f} s "
          f"-> {args.output}", file=sys.stderr)
    return 0


def cmd_train_genarm(args: argparse.Namespace) -> int:
    from paretoalign.config_loading import load_config
    from paretoalign.data.preference import load_preference_pairs
    from paretoalign.rewards.genarm_config import GenARMConfig
    from paretoalign.rewards.genarm_trainer import train_autoregressive_rm

    config = load_config(GenARMConfig, args.config, args.overrides, output_dir=args.output_dir)
    outputs.check_output_dir(config.output_dir, outputs.GENARM, overwrite=args.overwrite,
                             inputs=[args.config, *args.pairs, *outputs.config_input_paths(config)])
    for path in args.pairs:
        check_input_file(path, "--pairs")
    check_model_ref(config.model, "model")
    pairs = []
    for path in args.pairs:
        loaded = load_preference_pairs(path)
        if not loaded:
            raise InputError("the file has no rows (no preference pairs to train on)", path=str(path),
                             field="--pairs")
        pairs.extend(loaded)
    _, stats = train_autoregressive_rm(config, pairs, overwrite=args.overwrite)
    last = stats["steps"][-1] if stats["steps"] else {}
    print(f"trained an autoregressive RM on {stats['num_pairs']} pairs in {stats['num_steps']} steps (last loss "
          f"{last.get('loss', float('nan')):.4f}, accuracy {last.get('accuracy', float('nan')):.2f}); "
          f"saved to {config.output_dir}", file=sys.stderr)
    return 0


def parse_reward_lms(specs: Sequence[str]) -> list[tuple[str, float]]:
    """['DIR=0.5', 'DIR2'] -> [('DIR', 0.5), ('DIR2', 1.0)]."""
    out = []
    for spec in specs:
        path, sep, weight = spec.rpartition("=")
        if not sep:
            path, weight = spec, "1"
        try:
            value = float(weight)
        except ValueError as exc:
            raise InputError(f"expected DIR=WEIGHT, got {spec!r}", field="--reward-lm") from exc
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"the weight of {path!r} must be a finite number >= 0, got {weight!r}",
                             path="command line", field="--reward-lm")
        out.append((path, value))
    return out


def cmd_guided(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_jsonl_atomic
    from paretoalign.data.prompts import read_prompts
    from paretoalign.embed.models import load_causal_lm
    from paretoalign.inference.guided_decoding import reward_guided_generate

    specs = parse_reward_lms(args.reward_lm)
    outputs.check_output_file(args.output, inputs=[args.prompts, args.policy, *(path for path, _ in specs)])
    check_input_file(args.prompts, "--prompts")
    check_model_ref(args.policy, "--policy")
    for path, _ in specs:
        check_model_ref(path, "--reward-lm")
    rows = read_prompts(args.prompts)
    params = sampling_params_from_args(args)
    base, tokenizer = load_causal_lm(args.policy, trust_remote_code=args.trust_remote_code)
    from paretoalign.inference.policy import Policy

    check_prompts_fit(tokenizer, Policy(base, tokenizer).context_length, rows, params.max_new_tokens)
    reward_lms = [(load_causal_lm(path, trust_remote_code=args.trust_remote_code)[0], w) for path, w in specs]
    t0 = time.perf_counter()
    results = reward_guided_generate(base, tokenizer, reward_lms, [r.messages for r in rows], n=args.n,
                                     beta=args.beta, params=params)
    out_rows = []
    for r, cands in zip(rows, results, strict=True):
        row = dict(r.row)
        row["candidates"] = [{"response": c.text, "finished": c.finished, "tokens": len(c.token_ids),
                              "logprob_base": float(sum(c.logprobs)), "logprob_guided": float(sum(c.guided_logprobs))}
                             for c in cands]
        row["response"] = cands[0].text
        out_rows.append(row)
    write_jsonl_atomic(args.output, out_rows)
    print(f"guided decoding: {len(rows)} prompts x {args.n} in {time.perf_counter() - t0:.1f} s -> {args.output}",
          file=sys.stderr)
    return 0


# ---------------------------------------------------------------- merge
# ---------------------------------------------------------------- dpo / modpo / bond / warp
TRAINERS = {
    "dpo": ("paretoalign.train.dpo_config", "DPOConfig", "paretoalign.train.dpo_trainer", "train_dpo"),
    "modpo": ("paretoalign.train.modpo_config", "MODPOConfig", "paretoalign.train.modpo_trainer", "train_modpo"),
    "bond": ("paretoalign.train.bond_config", "BONDConfig", "paretoalign.train.bond_trainer", "train_bond"),
    "warp": ("paretoalign.train.warp_config", "WARPConfig", "paretoalign.train.warp_trainer", "train_warp"),
}


@contextlib.contextmanager
def removed_on_interrupt(run_dir: str | None):
    """On Ctrl-C in the block: a run folder this command created (it was missing or empty) is removed again unless
    it holds a resumable checkpoint, which is kept and named; a folder that existed before is not removed."""
    import shutil

    from paretoalign.train.checkpoint import CHECKPOINT_DIR

    folder = Path(run_dir) if run_dir else None
    fresh = folder is not None and (not folder.exists() or (folder.is_dir() and not any(folder.iterdir())))
    try:
        yield
    except KeyboardInterrupt:
        if folder is None or not folder.is_dir():
            raise Interrupted("nothing was written") from None
        checkpoints = sorted(folder.rglob(CHECKPOINT_DIR))
        if checkpoints:
            raise Interrupted(f"the resumable checkpoint in {checkpoints[0]} was kept: rerun the same command to "
                              "resume") from None
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
            raise Interrupted(f"nothing was kept (the run folder {folder} was removed)") from None
        raise Interrupted(f"{folder} existed before this run and was kept (no checkpoint to resume from)") from None


def cmd_train_policy(args: argparse.Namespace) -> int:
    import importlib

    from paretoalign.config_loading import load_config

    config_module, config_name, trainer_module, trainer_name = TRAINERS[args.method]
    config_cls = getattr(importlib.import_module(config_module), config_name)
    config = load_config(config_cls, args.config, args.overrides, output_dir=args.output_dir)
    run_method = config.variant if args.method == "bond" else args.method  # what the run folder records
    outputs.check_output_dir(config.output_dir, outputs.training_run(run_method), overwrite=args.overwrite,
                             inputs=[args.config, *outputs.config_input_paths(config)])
    reward_model = getattr(config, "reward_model", None)
    needs_rm = args.method in ("bond", "warp") or (args.method == "modpo" and config.margin_source == "reward_model"
                                                    and bool(config.margin_objectives))
    if reward_model is not None and needs_rm:
        check_reward_model_dir(reward_model, "reward_model", getattr(config, "trust_remote_code", False))
    check_model_ref(config.model, "model")
    check_model_ref(config.reference, "reference")
    for name in ("data", "prompts"):  # a file (or a datasets save_to_disk folder for data)
        value = getattr(config, name, None)
        if value is not None and not Path(value).exists():
            raise InputError("file not found", path=str(value), field=name)
    t0 = time.perf_counter()
    if args.method == "modpo" and config.sweep_weights:
        from paretoalign.train.modpo_trainer import train_modpo_sweep

        with removed_on_interrupt(config.output_dir):
            for row in train_modpo_sweep(config, overwrite=args.overwrite):
                print(f"modpo weights {row['weights']}: policy saved to {Path(row['output_dir']) / 'policy'}",
                      file=sys.stderr)
        print(f"modpo sweep of {len(config.sweep_weights)} weightings: {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        return 0
    trainer = getattr(importlib.import_module(trainer_module), trainer_name)
    with removed_on_interrupt(config.output_dir):
        _, stats = trainer(config, overwrite=args.overwrite)
    metrics = "iter*/run*/metrics.jsonl" if args.method == "warp" else "metrics.jsonl"
    print(f"{args.method}: trained in {time.perf_counter() - t0:.1f} s; policy saved to "
          f"{Path(config.output_dir) / 'policy'} (metrics: {Path(config.output_dir) / metrics})", file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from paretoalign.train.merge import merge_policies
    from paretoalign.train.policy_files import RECORD_FILE

    outputs.check_output_dir(args.output_dir, outputs.MERGE, inputs=[args.init, *args.models],
                             overwrite=args.overwrite)
    out = merge_policies(args.op, init=args.init, models=args.models, output_dir=args.output_dir, lam=args.lam,
                         eta=args.eta, mu=args.mu, overwrite=args.overwrite)
    summary = json.loads((out / RECORD_FILE).read_text(encoding="utf-8")).get("summary", {})
    detail = {"slerp": ("mean_angle_deg", "mean task-vector angle {:.2f} deg"),
              "liti": ("task_vector_norm_ratio", "task-vector norm ratio {:.4f}"),
              "ema": ("distance_ratio", "distance ratio {:.4f}")}[args.op]
    value = summary.get(detail[0])
    print(f"merge {args.op}: {len(args.models)} model(s) -> {out}"
          + (f" ({detail[1].format(value)})" if value is not None else ""))
    return 0


# ---------------------------------------------------------------- front
def parse_bon_ns(text: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8] (sorted, distinct); an empty string disables Best-of-N."""
    from paretoalign.inference.statistics import check_n

    return sorted({check_n(n, "--bon") for n in parse_int_list(text, "--bon") or []})


def front_run_names(runs: Sequence[str], names: Sequence[str] | None, reserved: set[str]) -> list[str]:
    """Display names of the runs: --names, else each directory's name (its path where names repeat)."""
    if names is not None and len(names) != len(runs):
        raise InputError(f"{len(names)} names for {len(runs)} runs: give one name per run", path="command line",
                         field="--names")
    if names is None:
        names = [Path(r).resolve().name or str(r) for r in runs]
        if len(set(names)) != len(names):
            names = [str(r) for r in runs]
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise InputError(f"run names must be unique, repeated: {repeated}", path="command line", field="--names")
    taken = sorted(set(names) & reserved)
    if taken:
        raise InputError(f"run name(s) {taken} are used by the reference / Best-of-N points: pass --names",
                         path="command line", field="--names")
    return list(names)


def check_reward_model_dir(path: str, field: str, trust_remote_code: bool = False) -> RewardModelReference:
    """Before any model loads: InputError, with a hint, unless `path` names a reward model we can load (our folder,
    `default`, or a Hugging Face sequence classifier; see `paretoalign.rewards.loading`). Returns what it names."""
    from paretoalign.rewards.loading import inspect_reward_model

    return inspect_reward_model(path, field=field, trust_remote_code=trust_remote_code)


def load_cli_reward_model(path: str, field: str, trust_remote_code: bool = False) -> ScoringRewardModel:
    """The reward model a command's flag names (checked by `check_reward_model_dir` first)."""
    from paretoalign.rewards.loading import load_reward_model

    return load_reward_model(path, trust_remote_code=trust_remote_code, field=field)


def check_rm_weights(weights: dict[str, float] | None, model: ScoringRewardModel) -> None:
    """InputError naming --weights (and, for a classifier, its folder) unless the model accepts these weights."""
    if weights is None:
        return
    try:
        model.resolve_weights(weights)
    except InputError as exc:
        raise InputError(exc.reason, path=exc.path or "command line", field="--weights") from None


def front_reward_model(path: str, trust_remote_code: bool = False) -> ScoringRewardModel:
    """The reward model of `front`, with a hint when it has not been trained yet."""
    check_reward_model_dir(path, "--reward-model", trust_remote_code)
    return load_cli_reward_model(path, "--reward-model", trust_remote_code)


def cmd_front(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from paretoalign import __version__
    from paretoalign.data.prompts import read_prompts
    from paretoalign.eval.policy_eval import (
        best_of_n_points,
        check_same_tokenizer,
        default_eval_prompts,
        evaluate_policy,
    )
    from paretoalign.inference.policy import Policy
    from paretoalign.inference.sampling_params import SamplingParams
    from paretoalign.inference.statistics import check_n
    from paretoalign.report.front_report import format_front_table, write_front_report
    from paretoalign.train.merge import policy_source

    # Everything that can be wrong with the input fails here, before any model is loaded or sampled.
    for run in args.runs:
        if not Path(run).is_dir():
            raise InputError("no such run directory (a saved policy)", path=str(run), field="--runs")
        saved = Path(run) / "policy"
        check_model_ref(str(saved if (saved / "config.json").is_file() else run), "--runs")
    check_input_file(args.prompts, "--prompts")
    check_model_ref(args.reference, "--reference")
    check_reward_model_dir(args.reward_model, "--reward-model", args.trust_remote_code)
    outputs.check_output_dir(args.output, outputs.FRONT_REPORT, overwrite=args.overwrite, field="--output",
                             inputs=[*args.runs, args.reference, args.reward_model, args.prompts])
    ns = parse_bon_ns(args.bon)
    names = front_run_names(args.runs, args.names, {"reference", *(f"best-of-{n}" for n in ns)})
    weights = parse_weights(args.weights)
    objectives = [s.strip() for s in args.objectives.split(",") if s.strip()] if args.objectives else None
    if objectives is not None and len(set(objectives)) < 2:
        raise InputError("name at least two objectives to plot against each other", path="command line",
                         field="--objectives")
    check_n(args.samples_per_prompt, "--samples-per-prompt")
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.prompts:
        prompts = [r.messages for r in read_prompts(args.prompts)]
        prompt_source = str(args.prompts)
    else:
        check_n(args.num_prompts, "--num-prompts")
        prompts = default_eval_prompts(args.num_prompts, seed=args.seed)
        prompt_source = f"bundled default pairs (sample of {len(prompts)} distinct short prompts, seed {args.seed})"
    reward_model = front_reward_model(args.reward_model, args.trust_remote_code)
    check_rm_weights(weights, reward_model)
    unknown = [k for k in objectives or () if k not in reward_model.objective_names]
    if unknown:
        raise InputError(f"unknown objective(s) {unknown}; this model has {reward_model.objective_names}",
                         path="command line", field="--objectives")
    reference = Policy.from_pretrained(args.reference, trust_remote_code=args.trust_remote_code)
    policies = [Policy.from_pretrained(policy_source(run), trust_remote_code=args.trust_remote_code)
                for run in args.runs]
    for policy in policies:
        check_same_tokenizer(policy, reference)

    t0 = time.perf_counter()
    print(f"sampling {len(prompts)} prompts from the reference {args.reference} (Best-of-N: {ns or 'off'}) ...",
          file=sys.stderr)
    points = best_of_n_points(reference, reward_model, prompts, ns, params=params, weights=weights,
                              samples_per_prompt=args.samples_per_prompt, batch_rows=args.batch_rows)
    for name, run, policy in zip(names, args.runs, policies, strict=True):
        print(f"evaluating {name} ({run}) ...", file=sys.stderr)
        points.append(evaluate_policy(policy, reference, reward_model, prompts,
                                      samples_per_prompt=args.samples_per_prompt, params=params, weights=weights,
                                      name=name, source=str(run), batch_rows=args.batch_rows))
    meta = {"prompts": prompt_source, "num_prompts": len(prompts), "samples_per_prompt": args.samples_per_prompt,
            "best_of_n": ns, "sampling_params": asdict(params), "reward_model": str(args.reward_model),
            "objectives": reward_model.objective_names, "weights": weights if weights is not None else "gating",
            "reference": str(args.reference), "runs": dict(zip(names, map(str, args.runs), strict=True)),
            "wall_s": round(time.perf_counter() - t0, 1), "paretoalign_version": __version__}
    table = write_front_report(points, args.output, objectives_to_plot=objectives, title=args.title, meta=meta,
                               overwrite=args.overwrite)
    print(format_front_table(points, [p["on_front"]["reward_vs_kl"] for p in table["points"]]))
    print(f"wrote the report to {Path(args.output) / 'index.html'} (front.json and PNG plots beside it)",
          file=sys.stderr)
    return 0


def add_generation_flags(p: argparse.ArgumentParser, with_rm: bool = True) -> None:
    """Flags shared by the commands that sample from a policy and score with an RM."""
    p.add_argument("--policy", default="smollm2", help="Policy model: alias (smollm2, gemma3-270m), .gguf file, "
                                                       "local directory or hub id.")
    if with_rm:
        p.add_argument("--rm", required=True, help=RM_REFERENCE_HELP)
    p.add_argument("--prompts", required=True, help="Prompt rows: JSONL/JSON/Parquet with a 'prompt' field (string "
                                                    "or messages), or a .txt file with one prompt per line.")
    if with_rm:
        p.add_argument("--weights", help="Objective weights name=value,... (default: the RM's gating).")
        p.add_argument("--batch-rows", type=positive_int, default=32, help="Candidates generated together.")
    p.add_argument("--temperature", type=non_negative_float, default=1.0,
                   help="Sampling temperature (default %(default)s).")
    p.add_argument("--top-p", type=probability, default=1.0,
                   help="Nucleus sampling: keep the smallest set of tokens with this total probability (1: off).")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="Sample among the k most likely tokens (0: off).")
    p.add_argument("--max-new-tokens", type=positive_int, default=128,
                   help="Token limit per response; a candidate that reaches it is unfinished (%(default)s).")
    p.add_argument("--stop", action="append", help="A stop string (repeat the flag for several).")
    p.add_argument("--seed", type=int, default=0, help="Sampling seed: candidate j of prompt i draws from a "
                                                       "generator seeded by (seed, i, j).")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="Allow the model folders this command loads (policies, the reward model or "
                        "its backbone) to run their own Python code (an auto_map); off by default, and a saved "
                        "model can never turn it on.")
    p.add_argument("--output", required=True, help="Output file (written atomically when everything is done).")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")


# ---------------------------------------------------------------- parser
CONFIG_CLASSES = {
    "train-rm": ("paretoalign.rewards.armo_config", "ArmoRMConfig"),
    "train-genarm": ("paretoalign.rewards.genarm_config", "GenARMConfig"),
    **{method: (module, name) for method, (module, name, _, _) in TRAINERS.items()},
}
"""The config dataclass behind each config-driven command (its fields are listed in the command's --help)."""
EXTRA_CONFIG_CLASSES = {"train-rm": (("paretoalign.train.rm_finetune_config", "RMFinetuneConfig"),)}
"""Further config dataclasses of a command (train-rm method=bt_finetune|grm), listed after the first."""


def _format_default(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def config_settings_help(config_cls: type, width: int | None = None) -> str:
    """Every field of a config dataclass as 'name: type = default' and its metadata help, for a --help epilog."""
    import dataclasses
    import shutil
    import textwrap

    width = width or max(60, min(shutil.get_terminal_size().columns, 120) - 2)
    lines = [textwrap.fill(f"settings of {config_cls.__name__} (key=value after the options, or keys of the "
                           "--config YAML file):", width=width)]
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if f.default is not dataclasses.MISSING:
            default = f" = {_format_default(f.default)}"
        elif f.default_factory is not dataclasses.MISSING:
            default = f" = {_format_default(f.default_factory())}"
        else:
            default = " (required)"
        lines.append(f"  {f.name}: {kind}{default}")
        text = f.metadata.get("help", "")
        if text:
            lines.append(textwrap.fill(" ".join(text.split()), width=width, initial_indent=" " * 6,
                                       subsequent_indent=" " * 6))
    return "\n".join(lines) + "\n"


class _HelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose --help ends with its config's settings, imported only when help is printed."""

    config_class: tuple[str, str] | None = None
    extra_config_classes: tuple[tuple[str, str], ...] = ()

    def format_help(self) -> str:
        text = super().format_help()
        import importlib

        for module, name in ([self.config_class] if self.config_class is not None else []) + list(
                self.extra_config_classes):
            text += "\n" + config_settings_help(getattr(importlib.import_module(module), name))
        return text

    def error(self, message: str):
        """A bad flag: two short lines (the error naming the flag, where to find the options), exit 2; argparse's
        default prints the whole usage, a dozen lines for the generation commands."""
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from paretoalign import __version__

    parser = _HelpParser(prog="paretoalign", description="Multi-objective alignment of language models.")
    parser.add_argument("--version", action="version", version=f"paretoalign {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-rm", help="Train a reward model: ArmoRM-style multi-objective (method=armo, the "
                                        "default) or a fine-tuned sequence classifier (method=bt_finetune|grm).",
                       description="Train a reward model. method=armo (the default): a multi-objective reward "
                                   "model on frozen backbone features; with no --config, the embedded default RM on "
                                   "the bundled data; settings: the fields of ArmoRMConfig. method=bt_finetune: a "
                                   "causal LM fine-tuned (LoRA or full) with a linear score head and the "
                                   "Bradley-Terry loss; method=grm: the same with GRM's text-generation "
                                   "regulariser (Yang et al. 2024); both save a transformers "
                                   "AutoModelForSequenceClassification to OUTPUT_DIR/reward_model; settings: the "
                                   "fields of RMFinetuneConfig. Settings come from a YAML file and/or key=value "
                                   "overrides (method too).")
    p.add_argument("--config", help="YAML file of ArmoRMConfig settings (or RMFinetuneConfig with method: "
                                    "bt_finetune|grm).")
    p.add_argument("--output-dir", help="Directory for the trained model (overrides the config's output_dir).")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. backbone=smollm2 gating_steps=500, or "
                                                "method=grm data=pairs.jsonl max_steps=200.")
    p.set_defaults(func=cmd_train_rm)

    p = sub.add_parser("score", help="Score (prompt, response) rows or preference pairs with a reward model.",
                       description="Input JSONL/JSON/Parquet rows {id?, prompt, response} or {prompt, chosen, "
                                   "rejected}; output rows keep every input field and add the score, the "
                                   "per-objective rewards, the gating weights and verbosity_contribution (the "
                                   "length-derived objective's term of the score; null without one), in input "
                                   "order.")
    p.add_argument("--model", required=True, help=RM_REFERENCE_HELP)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="Allow the reward model's folder (a classifier) or its backbone folder to run its own Python "
                        "code (an auto_map); off by default, and a saved model can never turn it on.")
    p.add_argument("--input", required=True, help="Rows to score.")
    p.add_argument("--output", required=True, help="JSONL output (written atomically).")
    p.add_argument("--weights", help="Fixed objective weights name=value,... replacing the gating (a "
                                     "classifier: label=weight,... replacing the mean of its logits).")
    p.add_argument("--batch-size", type=positive_int, help="Embedding batch size.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("eval-rm", help="Pairwise accuracy of a reward model, RewardBench-style.",
                       description="Accuracy per dataset/subset with bootstrap 95% intervals for the final score, "
                                   "each objective, the BT baseline and the length heuristic.")
    p.add_argument("--model", required=True, help=RM_REFERENCE_HELP)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="Allow the reward model's folder (a classifier) or its backbone folder to run its own Python "
                        "code (an auto_map); off by default, and a saved model can never turn it on.")
    p.add_argument("--data", nargs="*", help="Preference-pair files {prompt, chosen, rejected, subset?}, or "
                                             "RewardBench rows with --format rewardbench / rewardbench2.")
    p.add_argument("--format", choices=["pairs", "rewardbench", "rewardbench2"], default="pairs",
                   help="pairs: accuracy per dataset/subset with bootstrap intervals (ties count 1/2); rewardbench: "
                        "RewardBench v1 rows {prompt, chosen, rejected, subset}, accuracy per subset (ties are "
                        "wrong) and the Chat / Chat Hard / Safety / Reasoning section scores; rewardbench2: "
                        "RewardBench 2 best-of-n rows {prompt, chosen: [...], rejected: [...], subset, id}, with "
                        "the Ties rule. The RewardBench formats use only --data, --model, --batch-size, --output.")
    p.add_argument("--shared-heldout", metavar="DIR",
                   help="Also evaluate on the held-out (test) side of every pairwise dataset in this shared data "
                        "folder (e.g. ../shared/data).")
    p.add_argument("--max-pairs-per-dataset", type=positive_int, help="Subsample each shared dataset (seeded).")
    p.add_argument("--drop-empty", action="store_true", help="Skip (with a warning) pairs with an empty reply.")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="Bootstrap resamples for the intervals.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap and the subsampling.")
    p.add_argument("--batch-size", type=positive_int, help="Embedding batch size (default: the backbone's).")
    p.add_argument("--embedding-cache", default="auto",
                   help="Embedding cache ('auto': one file per backbone in the default cache folder; a directory; "
                        "a file; 'none').")
    p.add_argument("--output", help="Write the full report as JSON here.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    p.set_defaults(func=cmd_eval_rm)

    p = sub.add_parser("export-hf", help="Export a causal-LM reward model with fixed weights as a transformers "
                                         "AutoModelForSequenceClassification directory.")
    p.add_argument("--model", required=True, help="Reward model directory (from train-rm) with a causal-LM "
                                                  "backbone, e.g. backbone=smollm2.")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="Allow the reward model's backbone folder to run its own Python code (an auto_map); off "
                        "by default, and a saved model can never turn it on.")
    p.add_argument("--weights", required=True, help="Fixed objective weights name=value,...")
    p.add_argument("--output-dir", required=True, help="Directory for the exported sequence classifier "
                                                       "(config, safetensors, tokenizer).")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("bon", help="Best-of-N / worst-of-N / Speculative Rejection sampling with a reward model.",
                       description="One output row per prompt, in input order: the input fields plus 'response' "
                                   "(the pick), 'selected', 'candidates' (each with its score, per-objective "
                                   "rewards, finished flag, tokens, rejected_at) and 'stats'.")
    add_generation_flags(p)
    p.add_argument("--n", type=positive_int, default=16, help="Candidates per prompt.")
    p.add_argument("--select", choices=["best", "worst"], default="best",
                   help="Pick the highest-scoring finished candidate (best) or the lowest (worst, red-teaming).")
    p.add_argument("--method", choices=["bon", "speculative"], default="bon",
                   help="bon: generate all N candidates in full; speculative: Speculative Rejection, pruning "
                        "low-reward partial candidates at the decision points.")
    p.add_argument("--rejection-rate", type=float, default=0.5, help="Speculative Rejection: the fraction of "
                                                                     "partial candidates dropped at each decision.")
    p.add_argument("--decision-tokens", help="Speculative Rejection: token counts of the decision points, e.g. "
                                             "16,32,64 (default: doubling from 16).")
    p.add_argument("--reference", help="Reference policy for a Monte-Carlo KL of the sampler (stats.sampler_kl_mc).")
    p.set_defaults(func=cmd_bon)

    p = sub.add_parser("calibrate", help="InfAlign calibration: M reference rewards per prompt, saved for reuse.",
                       description="Samples M responses per prompt from the (reference) policy, scores them and "
                                   "saves the sorted rewards per prompt, from which C(x, y) and its exponential "
                                   "transforms for Best-of-N (t > 0) and worst-of-N (t < 0) are computed.")
    add_generation_flags(p)
    p.add_argument("--m", type=positive_int, default=32, help="Reference samples per prompt.")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("train-genarm", help="Train a GenARM autoregressive reward LM on preference pairs.",
                       description="Loss -log sigmoid(beta_r (log pi_r(y_w|x) - log pi_r(y_l|x))) (no reference "
                                   "model). Settings: GenARMConfig fields from YAML and/or key=value.")
    p.add_argument("--pairs", nargs="+", required=True, help="Preference-pair files {prompt, chosen, rejected}.")
    p.add_argument("--config", help="YAML file of GenARMConfig settings.")
    p.add_argument("--output-dir", help="Directory for the trained reward LM.")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. model=smollm2 lora=true max_steps=100.")
    p.set_defaults(func=cmd_train_genarm)

    p = sub.add_parser("guided", help="Reward-guided decoding (GenARM): pi_base * prod_i pi_r,i^(w_i/beta).",
                       description="Samples from the base policy steered token by token by autoregressive reward "
                                   "LMs (from train-genarm) that share its tokenizer.")
    add_generation_flags(p, with_rm=False)
    p.add_argument("--reward-lm", action="append", default=[], metavar="DIR=WEIGHT",
                   help="An autoregressive reward LM and its weight w_i >= 0 (repeat for several objectives).")
    p.add_argument("--beta", type=positive_float, default=1.0, help="KL strength: larger beta, weaker guidance.")
    p.add_argument("--n", type=positive_int, default=1, help="Candidates per prompt.")
    p.set_defaults(func=cmd_guided)

    for method, text in (
            ("dpo", "DPO on preference pairs: -log sigmoid(beta log pi/pi_ref(y_w) - beta log pi/pi_ref(y_l))."),
            ("modpo", "MODPO: DPO on one objective's pairs with the other objectives' rewards as a weighted margin."),
            ("bond", "J-BOND / BOND: distil Best-of-N of an (EMA) anchor into the policy (Jeffreys divergence)."),
            ("warp", "WARP: M EMA-anchored REINFORCE runs, SLERP of their task vectors, LITI toward the init.")):
        p = sub.add_parser(method, help=text, description=f"{text} Settings: the method's config fields from a YAML "
                           "file and/or key=value; with none, the embedded defaults (SmolLM2-135M-Instruct, LoRA, "
                           "the default RM, bundled data).")
        p.add_argument("--config", help="YAML file of config settings.")
        p.add_argument("--output-dir", help="Run directory: policy/, metrics.jsonl, checkpoint/, training.json.")
        p.add_argument("overrides", nargs="*", help="key=value settings, e.g. max_steps=20 lora=false beta=0.1.")
        p.set_defaults(func=cmd_train_policy, method=method)

    p = sub.add_parser("merge", help="Merge saved policies in weight space (WARP): slerp, liti or ema.",
                       description="slerp: --init and >= 2 --models (task vectors interpolated on the sphere, per "
                                   "tensor; --lam for 2 models, default 0.5). liti: --init, one model, --eta: "
                                   "(1-eta) init + eta model. ema: two models (anchor, current), --mu: "
                                   "(1-mu) anchor + mu current. Safetensors only; config and tokenizer are copied "
                                   "from the first model; merge_record.json records the operation.")
    p.add_argument("op", choices=["slerp", "liti", "ema"], help="The merge: slerp, liti or ema (see above).")
    p.add_argument("--init", help="The policy the models were fine-tuned from (slerp, liti).")
    p.add_argument("--models", nargs="+", required=True, help="Saved policy directories.")
    p.add_argument("--lam", type=unit_fraction,
                   help="slerp with 2 models: interpolation weight of the second, in [0, 1].")
    p.add_argument("--eta", type=unit_fraction, help="liti: in [0, 1].")
    p.add_argument("--mu", type=probability, help="ema: the weight of the current policy, in (0, 1].")
    p.add_argument("--output-dir", required=True, help="Output directory (written atomically).")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("front", help="Pareto fronts of saved policies against the reference and Best-of-N "
                                     "(reward vs KL, objective vs objective).",
                       description="Samples each saved policy and the reference on the same prompts, scores every "
                                   "response with the multi-objective RM, estimates KL(policy || reference) by "
                                   "Monte Carlo, adds Best-of-N from the reference at its KL bound, and writes "
                                   "front.json, reward_vs_kl.png, objective_<a>_vs_<b>.png and index.html.")
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR", help="Saved policy directories.")
    p.add_argument("--output", required=True, metavar="DIR", help="Report directory.")
    p.add_argument("--reference", default="smollm2", help="Reference policy: alias, .gguf file, local directory or "
                                                          "hub id (KL is measured to it).")
    p.add_argument("--reward-model", default="default",
                   help="Reward model: `default` (the shipped one, the default), a folder from train-rm, or a "
                        "Hugging Face sequence-classification folder or hub id.")
    p.add_argument("--prompts", help="Prompt file (JSONL/JSON/Parquet with 'prompt', or .txt); default: a seeded "
                                     "sample of --num-prompts short prompts from the bundled data.")
    p.add_argument("--num-prompts", type=positive_int, default=32, help="Prompts sampled from the bundled data.")
    p.add_argument("--samples-per-prompt", type=positive_int, default=4, help="Responses per prompt for each policy.")
    p.add_argument("--bon", default="2,4,8,16", help="Best-of-N sizes from the reference ('' disables).")
    p.add_argument("--weights", help="Objective weights name=value,... (default: the RM's gating).")
    p.add_argument("--names", nargs="+", help="Display names of the runs, one per --runs directory.")
    p.add_argument("--objectives", help="Objectives to plot pairwise, e.g. a,b,c (default: the 3 that vary most).")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="Token limit per sampled response.")
    p.add_argument("--temperature", type=non_negative_float, default=1.0,
                   help="Sampling temperature (KL is of the policy itself only at 1).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the prompt sample and of sampling.")
    p.add_argument("--batch-rows", type=positive_int, default=32, help="Candidates generated together.")
    p.add_argument("--title", default="Reward–KL trade-off", help="Title of the report page and plots.")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="Allow the model folders this command loads (policies, the reward model or "
                        "its backbone) to run their own Python code (an auto_map); off by default, and a saved "
                        "model can never turn it on.")
    p.set_defaults(func=cmd_front)

    p = sub.add_parser("demo", help="Score examples per objective with the shipped default RM, then Best-of-4.")
    p.add_argument("--output-dir", default=None,
                   help="Train the default recipe (`train-rm` with no config) into this folder once and use it "
                        "instead of the shipped model (reused when it is already there).")
    p.add_argument("--retrain", action="store_true", help="With --output-dir: train again even if it already "
                                                          "holds a reward model.")
    p.add_argument("--skip-bon", action="store_true", help="Skip the Best-of-4 sampling with the default policy.")
    p.set_defaults(func=cmd_demo)
    for name, choice in sub.choices.items():
        choice.config_class = CONFIG_CLASSES.get(name)
        choice.extra_config_classes = EXTRA_CONFIG_CLASSES.get(name, ())
    for name in ("train-rm", "export-hf", "train-genarm", "dpo", "modpo", "bond", "warp", "merge", "front", "demo"):
        sub.choices[name].add_argument("--overwrite", action="store_true", help=outputs.OVERWRITE_HELP)
    add_threads_flag(sub)
    for command in sub.choices.values():  # --debug after the command name too (SUPPRESS: keeps a global --debug)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def add_threads_flag(sub: argparse._SubParsersAction) -> None:
    """`--threads` on every command (the CPU threads torch may use; see paretoalign.threads)."""
    for command in sub.choices.values():
        command.add_argument("--threads", default=None, metavar="auto|N|torch",
                             help="CPU threads: 'auto' (default; the CPUs this process may use, fewer while other "
                                  "processes keep cores busy), a fixed N, or 'torch' (leave torch's own setting "
                                  "and the OpenMP environment alone). Default from PARETOALIGN_THREADS.")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command, with what the user should know about its output (e.g. a resumable checkpoint)."""

    def __init__(self, note: str = "") -> None:
        super().__init__(note)
        self.note = note


EXIT_INPUT_ERROR = 2
"""Exit status of a known error (bad input, a model folder we cannot read, a file we cannot write)."""
EXIT_UNEXPECTED = 1
"""Exit status of an unexpected error (a bug, or something we did not foresee)."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells use."""


def _one_line(text: str, limit: int = 600) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def known_error_message(exc: BaseException) -> str | None:
    """The one-line message of an error caused by the user's input or environment; None for anything else."""
    if isinstance(exc, (InputError, ModelFormatError)):
        return str(exc)
    if isinstance(exc, OSError) and getattr(exc, "filename", None) is not None:
        target = f" -> {exc.filename2}" if getattr(exc, "filename2", None) is not None else ""
        return f"{exc.filename}{target}: {exc.strerror or exc}"
    return None


def _wants_debug(args: argparse.Namespace | None) -> bool:
    import os

    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `paretoalign` command.

    Known errors (InputError, ModelFormatError, an OSError naming its file): one line `error: ...`, exit 2.
    Anything unexpected: one line and a hint to rerun with --debug, exit 1. Ctrl-C: one line, exit 130 (outputs are
    written atomically, so nothing partial is left). --debug or PARETOALIGN_DEBUG=1 prints the traceback too.
    """
    args = None
    try:
        args = build_parser().parse_args(argv)
        from paretoalign.threads import threads_scope

        with threads_scope(args.threads):
            return args.func(args)
    except KeyboardInterrupt as exc:
        if _wants_debug(args):
            import traceback

            traceback.print_exc()
        note = getattr(exc, "note", "") or "no output was left half-written (outputs are written only once complete)"
        start = "\n" if sys.stderr.isatty() else ""  # past a progress bar drawn on the same line
        print(f"{start}interrupted: {_one_line(note)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _wants_debug(args):
            import traceback

            traceback.print_exc()
        known = known_error_message(exc)
        if known is not None:
            print(f"error: {_one_line(known)}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        hint = "the traceback is above" if _wants_debug(args) else "rerun with `--debug` for the traceback"
        print(f"error: unexpected {type(exc).__name__}: {_one_line(str(exc), 400)} (a bug? {hint})",
              file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
