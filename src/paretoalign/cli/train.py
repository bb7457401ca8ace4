"""The training commands: dpo / modpo / bond / warp / grpo (policies), train-genarm (an autoregressive reward LM)
and merge (policies in weight space)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from paretoalign import output_paths as outputs
from paretoalign.cli.args import check_input_file, check_model_ref, check_reward_model_dir
from paretoalign.cli.common import load_run_config, removed_on_interrupt
from paretoalign.errors import InputError

# ---------------------------------------------------------------- dpo / modpo / bond / warp / grpo
TRAINERS = {
    "dpo": ("paretoalign.train.dpo_config", "DPOConfig", "paretoalign.train.dpo_trainer", "train_dpo"),
    "modpo": ("paretoalign.train.modpo_config", "MODPOConfig", "paretoalign.train.modpo_trainer", "train_modpo"),
    "bond": ("paretoalign.train.bond_config", "BONDConfig", "paretoalign.train.bond_trainer", "train_bond"),
    "warp": ("paretoalign.train.warp_config", "WARPConfig", "paretoalign.train.warp_trainer", "train_warp"),
    "grpo": ("paretoalign.train.grpo_config", "GRPOConfig", "paretoalign.train.grpo_trainer", "train_grpo"),
}


def cmd_train_policy(args: argparse.Namespace) -> int:
    import importlib

    config_module, config_name, trainer_module, trainer_name = TRAINERS[args.method]
    config_cls = getattr(importlib.import_module(config_module), config_name)
    # the run folder records the method (BOND: its variant, jbond or bond)
    config = load_run_config(args, config_cls,
                             lambda c: outputs.training_run(c.variant if args.method == "bond" else args.method))
    reward_model = getattr(config, "reward_model", None)
    needs_rm = args.method in ("bond", "warp", "grpo") or (
        args.method == "modpo" and config.margin_source == "reward_model" and bool(config.margin_objectives))
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


# ---------------------------------------------------------------- train-genarm
def cmd_train_genarm(args: argparse.Namespace) -> int:
    from paretoalign.data.preference import load_preference_pairs
    from paretoalign.train.genarm_config import GenARMConfig
    from paretoalign.train.genarm_trainer import train_autoregressive_rm

    config = load_run_config(args, GenARMConfig, outputs.GENARM, inputs=args.pairs)
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
    t0 = time.perf_counter()
    with removed_on_interrupt(config.output_dir):
        _, stats = train_autoregressive_rm(config, pairs, overwrite=args.overwrite)
    last = stats["steps"][-1] if stats["steps"] else {}
    print(f"trained an autoregressive RM on {stats['num_pairs']} pairs in {stats['num_steps']} steps, "
          f"{time.perf_counter() - t0:.1f} s (last loss {last.get('loss', float('nan')):.4f}, accuracy "
          f"{last.get('accuracy', float('nan')):.2f}); saved to {config.output_dir} (metrics: "
          f"{Path(config.output_dir) / 'metrics.jsonl'})", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- merge
def cmd_merge(args: argparse.Namespace) -> int:
    from paretoalign.train.merge import ARGUMENTS, merge_policies
    from paretoalign.train.policy_files import RECORD_FILE

    outputs.check_output_dir(args.output_dir, outputs.MERGE, inputs=[args.init, *args.models],
                             overwrite=args.overwrite)
    try:
        out = merge_policies(args.op, init=args.init, models=args.models, output_dir=args.output_dir, lam=args.lam,
                             eta=args.eta, mu=args.mu, overwrite=args.overwrite)
    except InputError as exc:  # it names its argument: name the flag (and, for a value, the command line)
        if exc.field not in ARGUMENTS:
            raise
        raise InputError(exc.reason, path=exc.path or "command line", line=exc.line,
                         field="--" + exc.field.replace("_", "-")) from exc
    summary = json.loads((out / RECORD_FILE).read_text(encoding="utf-8")).get("summary", {})
    detail = {"slerp": ("mean_angle_deg", "mean task-vector angle {:.2f} deg"),
              "liti": ("task_vector_norm_ratio", "task-vector norm ratio {:.4f}"),
              "ema": ("distance_ratio", "distance ratio {:.4f}")}[args.op]
    value = summary.get(detail[0])
    print(f"merge {args.op}: {len(args.models)} model(s) -> {out}"
          + (f" ({detail[1].format(value)})" if value is not None else ""))
    return 0
