"""The report command: front (Pareto fronts of saved policies against the reference and Best-of-N)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from paretoalign import output_paths as outputs
from paretoalign.cli.args import (
    check_input_file,
    check_model_ref,
    check_reward_model_dir,
    check_rm_weights,
    load_cli_reward_model,
    parse_bon_ns,
    parse_deal_settings,
    parse_weights,
)
from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.rewards.protocols import Scorer


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


def front_reward_model(path: str, trust_remote_code: bool = False) -> Scorer:
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
        deal_name,
        deal_point,
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
    deal_settings = parse_deal_settings(args.deal, args.max_new_tokens)
    deal_names = [deal_name(d) for d in deal_settings]
    if len(set(deal_names)) != len(deal_names):
        raise InputError(f"repeated DeAL setting in {args.deal!r}", path="command line", field="--deal")
    names = front_run_names(args.runs, args.names, {"reference", *(f"best-of-{n}" for n in ns), *deal_names})
    if not (args.runs or ns or deal_settings):
        raise InputError("nothing to compare with the reference: give --runs, --bon or --deal", path="command line",
                         field="--runs")
    weights = parse_weights(args.weights)
    objectives = [s.strip() for s in args.objectives.split(",") if s.strip()] if args.objectives else None
    if objectives is not None and len(set(objectives)) < 2:
        raise InputError("name at least two objectives to plot against each other", path="command line",
                         field="--objectives")
    check_n(args.samples_per_prompt, "--samples-per-prompt")
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    rows = None
    if args.prompts:
        rows = read_prompts(args.prompts)
        prompts = [r.messages for r in rows]
        prompt_source = str(args.prompts)
    else:
        check_n(args.num_prompts, "--num-prompts")
        prompts = default_eval_prompts(args.num_prompts, seed=args.seed)
        prompt_source = f"bundled default pairs (sample of {len(prompts)} distinct short prompts, seed {args.seed})"
    reward_model = front_reward_model(args.reward_model, args.trust_remote_code)
    check_rm_weights(weights, reward_model)
    if hasattr(reward_model, "attach_prompts"):  # a reward set: the prompt rows' own constraints
        if rows is not None:
            reward_model.attach_prompts(rows)
        if hasattr(reward_model, "check_prompts"):
            reward_model.check_prompts(prompts)
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
    for setting, name in zip(deal_settings, deal_names, strict=True):
        print(f"DeAL search from the reference: {name} ...", file=sys.stderr)
        points.append(deal_point(reference, reward_model, prompts, setting, weights=weights, name=name,
                                 batch_rows=args.batch_rows))
    meta = {"prompts": prompt_source, "num_prompts": len(prompts), "samples_per_prompt": args.samples_per_prompt,
            "best_of_n": ns, "deal": deal_names, "sampling_params": asdict(params),
            "reward_model": str(args.reward_model),
            "objectives": reward_model.objective_names, "weights": weights if weights is not None else "gating",
            "reference": str(args.reference), "runs": dict(zip(names, map(str, args.runs), strict=True)),
            "wall_s": round(time.perf_counter() - t0, 1), "paretoalign_version": __version__}
    table = write_front_report(points, args.output, objectives_to_plot=objectives, title=args.title, meta=meta,
                               overwrite=args.overwrite)
    print(format_front_table(points, [p["on_front"]["reward_vs_kl"] for p in table["points"]]))
    print(f"wrote the report to {Path(args.output) / 'index.html'} (front.json and PNG plots beside it)",
          file=sys.stderr)
    return 0
