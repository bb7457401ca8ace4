"""The sampling commands: bon (Best-of-N, worst-of-N, Speculative Rejection), calibrate (InfAlign) and guided
(GenARM reward-guided decoding)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from paretoalign import output_paths as outputs
from paretoalign.cli.args import (
    check_input_file,
    check_model_ref,
    check_reward_model_dir,
    check_rm_weights,
    load_cli_reward_model,
    parse_int_list,
    parse_reward_lms,
    parse_weights,
)
from paretoalign.cli.common import check_prompts_fit, merged_rows, sampling_params_from_args

if TYPE_CHECKING:
    from paretoalign.data.prompts import PromptRow


# ---------------------------------------------------------------- bon / calibrate
def attach_prompt_constraints(scorer: object, rows: Sequence[PromptRow]) -> None:
    """Give a scorer that takes them (a reward set) the prompt rows' own constraints, and check it has every
    prompt's constraints it needs, before any model samples."""
    if hasattr(scorer, "attach_prompts"):
        scorer.attach_prompts(rows)
        if hasattr(scorer, "check_prompts"):
            scorer.check_prompts([r.messages for r in rows])


def load_generation_inputs(args: argparse.Namespace):
    """Prompt rows, policy and reward model of `bon` / `calibrate`, input checked before any model loads."""
    from paretoalign.data.prompts import read_prompts
    from paretoalign.inference.policy import Policy
    from paretoalign.rewards.loading import reward_model_inputs

    outputs.check_output_file(args.output, inputs=[args.prompts, args.policy, getattr(args, "reference", None),
                                                   *reward_model_inputs(args.rm)])
    check_input_file(args.prompts, "--prompts")
    check_reward_model_dir(args.rm, "--rm", args.trust_remote_code)
    check_model_ref(args.policy, "--policy")
    check_model_ref(getattr(args, "reference", None), "--reference")
    rows = read_prompts(args.prompts)
    weights = parse_weights(args.weights)
    params = sampling_params_from_args(args)
    reward_model = load_cli_reward_model(args.rm, "--rm", args.trust_remote_code)
    check_rm_weights(weights, reward_model)
    attach_prompt_constraints(reward_model, rows)
    policy = Policy.from_pretrained(args.policy, trust_remote_code=args.trust_remote_code)
    check_prompts_fit(policy.tokenizer, policy.context_length, rows, params.max_new_tokens)
    return rows, weights, params, policy, reward_model



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
    write_jsonl_atomic(args.output, merged_rows(rows, results))
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



# ---------------------------------------------------------------- guided
def cmd_guided(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_jsonl_atomic
    from paretoalign.data.prompts import read_prompts
    from paretoalign.embed.models import load_causal_lm
    from paretoalign.inference.guided_decoding import guided_rows, reward_guided_generate

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
        row["candidates"] = guided_rows(cands)
        row["response"] = cands[0].text
        out_rows.append(row)
    write_jsonl_atomic(args.output, out_rows)
    print(f"guided decoding: {len(rows)} prompts x {args.n} in {time.perf_counter() - t0:.1f} s -> {args.output}",
          file=sys.stderr)
    return 0
