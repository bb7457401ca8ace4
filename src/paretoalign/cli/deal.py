"""The deal command: DeAL search decoding (beams ranked by log-prob plus a reward look-ahead), one row per prompt."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from paretoalign import output_paths as outputs
from paretoalign.cli.args import (
    check_input_file,
    check_model_ref,
    check_reward_model_dir,
    check_rm_weights,
    load_cli_reward_model,
    non_negative_float,
    non_negative_int,
    parse_weights,
    positive_int,
)
from paretoalign.cli.common import check_prompts_fit, merged_rows
from paretoalign.cli.flags import BATCH_ROWS, MAX_NEW_TOKENS, QUIET, RM_REFERENCE_HELP, TRUST_ANY_MODEL, WEIGHTS, flag
from paretoalign.cli.inference import attach_prompt_constraints

FLAGS = (
    flag("--model", "--policy", dest="policy", default="smollm2",
         help="Policy model: alias (smollm2, gemma3-270m), .gguf file, local directory or hub id."),
    flag("--reward-model", "--rm", dest="rm", required=True,
         help=RM_REFERENCE_HELP + " Or a reward-set file (.yaml/.json with a `rewards` list)."),
    flag("--prompts", required=True,
         help="Prompt rows: JSONL/JSON/Parquet with a 'prompt' field (string or messages; optional 'constraints'), "
              "or a .txt file with one prompt per line."),
    WEIGHTS,
    BATCH_ROWS.but(help="Beam rows (beams x top-k per prompt) searched together."),
    flag("--beams", type=positive_int, default=2, help="Beams b kept per prompt after each step (%(default)s)."),
    flag("--top-k", type=positive_int, default=2,
         help="Next tokens under the policy each unfinished beam is expanded by; may be below --beams "
              "(%(default)s)."),
    flag("--lookahead", type=non_negative_int, default=4,
         help="Greedy look-ahead tokens after each candidate token that the reward reads; 0: the prefix itself "
              "(%(default)s)."),
    flag("--lam", type=non_negative_float, default=1.0,
         help="λ: weight of the reward against log π(prefix) in the beam score; 0 is plain beam search "
              "(%(default)s)."),
    flag("--reward-every", type=positive_int, default=4,
         help="Run the reward look-ahead every m steps; between them candidates inherit their beam's reward "
              "(%(default)s)."),
    flag("--select-by", choices=["score", "reward"], default="score",
         help="The pick among finished beams: score (highest log π + λ·R) or reward (highest final reward)."),
    MAX_NEW_TOKENS,
    flag("--stop", action="append", help="A stop string (repeat the flag for several)."),
    TRUST_ANY_MODEL,
    flag("--output", required=True, help="Output file (written atomically when everything is done)."),
    QUIET.but(help="No progress bar."),
)
"""The flags of `paretoalign deal`, in --help order."""


def cmd_deal(args: argparse.Namespace) -> int:
    from paretoalign.atomic_io import write_jsonl_atomic
    from paretoalign.data.prompts import read_prompts
    from paretoalign.inference.deal import DeALParams, deal_generate
    from paretoalign.inference.policy import Policy
    from paretoalign.rewards.loading import reward_model_inputs

    params = DeALParams(beams=args.beams, top_k=args.top_k, lookahead=args.lookahead, lam=args.lam,
                        reward_every=args.reward_every, max_new_tokens=args.max_new_tokens,
                        stop=tuple(args.stop or ()), select_by=args.select_by)  # fail before loading any model
    outputs.check_output_file(args.output, inputs=[args.prompts, args.policy, *reward_model_inputs(args.rm)])
    check_input_file(args.prompts, "--prompts")
    check_reward_model_dir(args.rm, "--reward-model", args.trust_remote_code)
    check_model_ref(args.policy, "--model")
    rows = read_prompts(args.prompts)
    weights = parse_weights(args.weights)
    reward_model = load_cli_reward_model(args.rm, "--reward-model", args.trust_remote_code)
    check_rm_weights(weights, reward_model)
    attach_prompt_constraints(reward_model, rows)
    if hasattr(reward_model, "probe"):
        reward_model.probe()
    policy = Policy.from_pretrained(args.policy, trust_remote_code=args.trust_remote_code)
    check_prompts_fit(policy.tokenizer, policy.context_length, rows, params.max_new_tokens)
    t0 = time.perf_counter()
    results = deal_generate(policy, reward_model, [r.messages for r in rows], weights=weights,
                            batch_rows=args.batch_rows, progress=not args.quiet,
                            **{f.name: getattr(params, f.name) for f in dataclasses.fields(DeALParams)})
    write_jsonl_atomic(args.output, merged_rows(rows, results))
    finished = sum(res.finished for res in results)
    evaluated = sum(res.tokens_evaluated for res in results)
    print(f"deal: {len(results)} prompts, beams={params.beams} top_k={params.top_k} lookahead={params.lookahead} "
          f"lam={params.lam}, {finished} finished, {evaluated} tokens evaluated in {time.perf_counter() - t0:.1f} s "
          f"-> {args.output}", file=sys.stderr)
    return 0
