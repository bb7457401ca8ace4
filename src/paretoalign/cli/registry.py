"""Every command of the `paretoalign` CLI as data (name, help, function, flags), and the parser built from them."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paretoalign.cli import deal, inference, report, rm, serve, train
from paretoalign.cli.args import non_negative_float, positive_float, positive_int, probability, unit_fraction
from paretoalign.cli.flags import (
    BATCH_ROWS,
    DEBUG,
    DEBUG_AFTER_COMMAND,
    GENERATION,
    GENERATION_WITHOUT_RM,
    MAX_NEW_TOKENS,
    OVERWRITE,
    QUIET,
    RM_REFERENCE_HELP,
    SEED,
    TEMPERATURE,
    THREADS,
    TRUST_ANY_MODEL,
    TRUST_RM,
    WEIGHTS,
    Flag,
    config_flags,
    flag,
    trust_remote_code,
)
from paretoalign.cli.help import HelpParser
from paretoalign.server.config import ENGINES, ServeConfig, flag_name


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, the function that runs it, and its flags in --help order."""

    name: str
    help: str
    func: Callable[[argparse.Namespace], int]
    flags: tuple[Flag, ...] = ()
    description: str | None = None
    config_classes: tuple[tuple[str, str], ...] = ()
    """(module, class name) of the config dataclasses whose fields --help lists (settings of a config command)."""
    writes_folder: bool = False
    """The command writes an output folder: it takes --overwrite."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Further attributes of the parsed arguments (e.g. the method of a policy trainer)."""


def _serve_flag(name: str, **options: Any) -> Flag:
    """The flag of ServeConfig field `name`: its help text and default come from the field."""
    spec = {f.name: f for f in dataclasses.fields(ServeConfig)}[name]
    text = spec.metadata["help"]
    if spec.default not in (None, False, ()) and options.get("action") is None:
        text += " Default: %(default)s."
        options.setdefault("default", spec.default)
    return flag(flag_name(name), help=text, **options)


SERVE_FLAGS = (
    _serve_flag("model", metavar="DIR|default"), _serve_flag("policy"),
    _serve_flag("host"), _serve_flag("port", type=int), _serve_flag("api_key_file", metavar="FILE"),
    _serve_flag("query_template", metavar="NAME|DIR"),
    _serve_flag("max_batch_rows", type=positive_int, metavar="N"),
    _serve_flag("max_batch_tokens", type=positive_int, metavar="N"),
    _serve_flag("max_wait_ms", type=non_negative_float, metavar="MS"),
    _serve_flag("batch_size", type=positive_int, metavar="N"), _serve_flag("exact", action="store_true"),
    _serve_flag("max_items", type=positive_int, metavar="N"),
    _serve_flag("max_text_chars", type=positive_int, metavar="N"),
    _serve_flag("max_body_bytes", type=positive_int, metavar="N"),
    _serve_flag("cors_origins", action="append", metavar="ORIGIN", dest="cors_origin"),
    _serve_flag("max_n", type=positive_int, metavar="N"), _serve_flag("max_new_tokens", type=positive_int, metavar="N"),
    _serve_flag("engine", choices=list(ENGINES)), _serve_flag("replicas", type=positive_int, metavar="N"),
    _serve_flag("ray_address", metavar="ADDR"),
    _serve_flag("graceful_timeout_s", type=non_negative_float, metavar="S"),
    _serve_flag("trust_remote_code", action="store_true"),
)
"""`serve`: one flag per ServeConfig field."""


def _policy_trainer(method: str, text: str) -> Command:
    """dpo / modpo / bond / warp: a config-driven policy training run."""
    config_module, config_name, _, _ = train.TRAINERS[method]
    return Command(
        method, text, train.cmd_train_policy, defaults={"method": method}, writes_folder=True,
        config_classes=((config_module, config_name),),
        description=f"{text} Settings: the method's config fields from a YAML file and/or key=value; with none, the "
                    "embedded defaults (SmolLM2-135M-Instruct, LoRA, the default RM, bundled data).",
        flags=config_flags("YAML file of config settings.",
                           "Run directory: policy/, metrics.jsonl, checkpoint/, training.json.",
                           "key=value settings, e.g. max_steps=20 lora=false beta=0.1."))


COMMANDS: tuple[Command, ...] = (
    Command(
        "train-rm", "Train a reward model: ArmoRM-style multi-objective (method=armo, the default) or a fine-tuned "
                    "sequence classifier (method=bt_finetune|grm).", rm.cmd_train_rm, writes_folder=True,
        config_classes=(("paretoalign.rewards.armo_config", "ArmoRMConfig"),
                        ("paretoalign.train.rm_finetune_config", "RMFinetuneConfig")),
        description="Train a reward model. method=armo (the default): a multi-objective reward model on frozen "
                    "backbone features; with no --config, the embedded default RM on the bundled data; settings: the "
                    "fields of ArmoRMConfig. method=bt_finetune: a causal LM fine-tuned (LoRA or full) with a linear "
                    "score head and the Bradley-Terry loss; method=grm: the same with GRM's text-generation "
                    "regulariser (Yang et al. 2024); both save a transformers AutoModelForSequenceClassification to "
                    "OUTPUT_DIR/reward_model; settings: the fields of RMFinetuneConfig. Settings come from a YAML "
                    "file and/or key=value overrides (method too).",
        flags=config_flags("YAML file of ArmoRMConfig settings (or RMFinetuneConfig with method: bt_finetune|grm).",
                           "Directory for the trained model (overrides the config's output_dir).",
                           "key=value settings, e.g. backbone=smollm2 gating_steps=500, or method=grm "
                           "data=pairs.jsonl max_steps=200.")),
    Command(
        "maxmin-rm", "MaxMin-RLHF: H Bradley-Terry reward models, one per user group, fitted by EM over users.",
        rm.cmd_maxmin_rm, writes_folder=True,
        config_classes=(("paretoalign.rewards.maxmin_config", "MaxMinRMConfig"),),
        description="Fits H linear Bradley-Terry heads on frozen backbone features by hard EM over the users who "
                    "tagged the pairs (column `user`, else `subset`, or user_field=...): each user goes to the head "
                    "that best explains its pairs, each head is refitted on its users' pairs, until the assignment "
                    "settles. Writes a reward model with objectives group0..group{H-1} (usable as `rm: group0` in a "
                    "reward set and with GRPO's weighting: maxmin) and assignments.json; prints each group's users.",
        flags=config_flags("YAML file of MaxMinRMConfig settings.",
                           "Directory for the reward model and assignments.json (overrides output_dir).",
                           "key=value settings, e.g. data=pairs.jsonl n_groups=2 backbone=minilm.")),
    Command(
        "score", "Score (prompt, response) rows or preference pairs with a reward model.", rm.cmd_score,
        description="Input JSONL/JSON/Parquet rows {id?, prompt, response} or {prompt, chosen, rejected}; output rows "
                    "keep every input field and add the score, the per-objective rewards, the gating weights and "
                    "verbosity_contribution (the length-derived objective's term of the score; null without one), in "
                    "input order.",
        flags=(flag("--model", required=True, help=RM_REFERENCE_HELP), TRUST_RM,
               flag("--input", required=True, help="Rows to score."),
               flag("--output", required=True, help="JSONL output (written atomically)."),
               WEIGHTS.but(help="Fixed objective weights name=value,... replacing the gating (a classifier: "
                                "label=weight,... replacing the mean of its logits)."),
               flag("--batch-size", type=positive_int, help="Embedding batch size."),
               flag("--engine", choices=["local", "ray"], default="local",
                    help="local: score in this process (default); ray: split the rows over Ray workers, each loading "
                         "the model once (the [ray] extra; same scores, same output)."),
               flag("--num-workers", type=positive_int, default=2,
                    help="--engine ray: the Ray workers scoring in parallel (default %(default)s)."),
               flag("--ray-address", metavar="ADDR",
                    help="--engine ray: the cluster to join (`auto`, or HEAD:6379 after `ray start --head`); "
                         "default: start a local Ray for this run."),
               QUIET)),
    Command(
        "eval-rm", "Pairwise accuracy of a reward model, RewardBench-style.", rm.cmd_eval_rm,
        description="Accuracy per dataset/subset with bootstrap 95% intervals for the final score, each objective, "
                    "the BT baseline and the length heuristic.",
        flags=(flag("--model", required=True, help=RM_REFERENCE_HELP), TRUST_RM,
               flag("--data", nargs="*", help="Preference-pair files {prompt, chosen, rejected, subset?}, or "
                                              "RewardBench rows with --format rewardbench / rewardbench2."),
               flag("--format", choices=["pairs", "rewardbench", "rewardbench2"], default="pairs",
                    help="pairs: accuracy per dataset/subset with bootstrap intervals (ties count 1/2); rewardbench: "
                         "RewardBench v1 rows {prompt, chosen, rejected, subset}, accuracy per subset (ties are "
                         "wrong) and the Chat / Chat Hard / Safety / Reasoning section scores; rewardbench2: "
                         "RewardBench 2 best-of-n rows {prompt, chosen: [...], rejected: [...], subset, id}, with the "
                         "Ties rule. The RewardBench formats use only --data, --model, --batch-size, --output."),
               flag("--shared-heldout", metavar="DIR",
                    help="Also evaluate on the held-out (test) side of every pairwise dataset in this shared data "
                         "folder (e.g. ../shared/data)."),
               flag("--max-pairs-per-dataset", type=positive_int, help="Subsample each shared dataset (seeded)."),
               flag("--drop-empty", action="store_true", help="Skip (with a warning) pairs with an empty reply."),
               flag("--bootstrap", type=positive_int, default=1000, help="Bootstrap resamples for the intervals."),
               SEED.but(help="Seed of the bootstrap and the subsampling."),
               flag("--batch-size", type=positive_int, help="Embedding batch size (default: the backbone's)."),
               flag("--embedding-cache", default="auto",
                    help="Embedding cache ('auto': one file per backbone in the default cache folder; a directory; a "
                         "file; 'none')."),
               flag("--output", help="Write the full report as JSON here."), QUIET)),
    Command(
        "export-hf", "Export a causal-LM reward model with fixed weights as a transformers "
                     "AutoModelForSequenceClassification directory.", rm.cmd_export_hf, writes_folder=True,
        flags=(flag("--model", required=True,
                    help="Reward model directory (from train-rm) with a causal-LM backbone, e.g. backbone=smollm2."),
               trust_remote_code("the reward model's backbone folder", plural=False),
               flag("--weights", required=True, help="Fixed objective weights name=value,..."),
               flag("--output-dir", required=True,
                    help="Directory for the exported sequence classifier (config, safetensors, tokenizer)."))),
    Command(
        "bon", "Best-of-N / worst-of-N / Speculative Rejection sampling with a reward model.", inference.cmd_bon,
        description="One output row per prompt, in input order: the input fields plus 'response' (the pick), "
                    "'selected', 'candidates' (each with its score, per-objective rewards, finished flag, tokens, "
                    "rejected_at) and 'stats'.",
        flags=(*GENERATION,
               flag("--n", type=positive_int, default=16, help="Candidates per prompt."),
               flag("--select", choices=["best", "worst"], default="best",
                    help="Pick the highest-scoring finished candidate (best) or the lowest (worst, red-teaming)."),
               flag("--method", choices=["bon", "speculative"], default="bon",
                    help="bon: generate all N candidates in full; speculative: Speculative Rejection, pruning "
                         "low-reward partial candidates at the decision points."),
               flag("--rejection-rate", type=float, default=0.5,
                    help="Speculative Rejection: the fraction of partial candidates dropped at each decision."),
               flag("--decision-tokens", help="Speculative Rejection: token counts of the decision points, e.g. "
                                              "16,32,64 (default: doubling from 16)."),
               flag("--reference",
                    help="Reference policy for a Monte-Carlo KL of the sampler (stats.sampler_kl_mc)."))),
    Command(
        "calibrate", "InfAlign calibration: M reference rewards per prompt, saved for reuse.", inference.cmd_calibrate,
        description="Samples M responses per prompt from the (reference) policy, scores them and saves the sorted "
                    "rewards per prompt, from which C(x, y) and its exponential transforms for Best-of-N (t > 0) and "
                    "worst-of-N (t < 0) are computed.",
        flags=(*GENERATION, flag("--m", type=positive_int, default=32, help="Reference samples per prompt."))),
    Command(
        "train-genarm", "Train a GenARM autoregressive reward LM on preference pairs.", train.cmd_train_genarm,
        writes_folder=True, config_classes=(("paretoalign.train.genarm_config", "GenARMConfig"),),
        description="Loss -log sigmoid(beta_r (log pi_r(y_w|x) - log pi_r(y_l|x))) (no reference model). Settings: "
                    "GenARMConfig fields from YAML and/or key=value.",
        flags=(flag("--pairs", nargs="+", required=True, help="Preference-pair files {prompt, chosen, rejected}."),
               *config_flags("YAML file of GenARMConfig settings.", "Directory for the trained reward LM.",
                             "key=value settings, e.g. model=smollm2 lora=true max_steps=100."))),
    Command(
        "guided", "Reward-guided decoding (GenARM): pi_base * prod_i pi_r,i^(w_i/beta).", inference.cmd_guided,
        description="Samples from the base policy steered token by token by autoregressive reward LMs (from "
                    "train-genarm) that share its tokenizer.",
        flags=(*GENERATION_WITHOUT_RM,
               flag("--reward-lm", action="append", default=[], metavar="DIR=WEIGHT",
                    help="An autoregressive reward LM and its weight w_i >= 0 (repeat for several objectives)."),
               flag("--beta", type=positive_float, default=1.0, help="KL strength: larger beta, weaker guidance."),
               flag("--n", type=positive_int, default=1, help="Candidates per prompt."))),
    Command(
        "deal", "DeAL search decoding: beams ranked by log π(prefix) + λ·R(x, prefix + greedy look-ahead).",
        deal.cmd_deal, flags=deal.FLAGS,
        description="One output row per prompt, in input order: the input fields plus 'response' (the best finished "
                    "beam; null when none finished), 'selected', 'candidates' (the returned beam with its reward, "
                    "objectives, search score and log-prob), 'tokens_evaluated' and 'stats'. Reward-set files attach "
                    "the prompts' own constraints."),
    _policy_trainer("dpo", "DPO on preference pairs: -log sigmoid(beta log pi/pi_ref(y_w) - beta log "
                           "pi/pi_ref(y_l))."),
    _policy_trainer("modpo", "MODPO: DPO on one objective's pairs with the other objectives' rewards as a weighted "
                             "margin."),
    _policy_trainer("bond", "J-BOND / BOND: distil Best-of-N of an (EMA) anchor into the policy (Jeffreys "
                            "divergence)."),
    _policy_trainer("warp", "WARP: M EMA-anchored REINFORCE runs, SLERP of their task vectors, LITI toward the "
                            "init."),
    _policy_trainer("grpo", "GRPO: G samples per prompt, group-normalised advantages of one or several rewards "
                            "(fixed or dynamic weights), clipped ratio loss with a k3 KL to the reference."),
    Command(
        "merge", "Merge saved policies in weight space (WARP): slerp, liti or ema.", train.cmd_merge,
        writes_folder=True,
        description="slerp: --init and >= 2 --models (task vectors interpolated on the sphere, per tensor; --lam for "
                    "2 models, default 0.5). liti: --init, one model, --eta: (1-eta) init + eta model. ema: two "
                    "models (anchor, current), --mu: (1-mu) anchor + mu current. Safetensors only; config and "
                    "tokenizer are copied from the first model; merge_record.json records the operation.",
        flags=(flag("op", choices=["slerp", "liti", "ema"], help="The merge: slerp, liti or ema (see above)."),
               flag("--init", help="The policy the models were fine-tuned from (slerp, liti)."),
               flag("--models", nargs="+", required=True, help="Saved policy directories."),
               flag("--lam", type=unit_fraction,
                    help="slerp with 2 models: interpolation weight of the second, in [0, 1]."),
               flag("--eta", type=unit_fraction, help="liti: in [0, 1]."),
               flag("--mu", type=probability, help="ema: the weight of the current policy, in (0, 1]."),
               flag("--output-dir", required=True, help="Output directory (written atomically)."))),
    Command(
        "front", "Pareto fronts of saved policies against the reference and Best-of-N (reward vs KL, objective vs "
                 "objective).", report.cmd_front, writes_folder=True,
        description="Samples each saved policy and the reference on the same prompts, scores every response with the "
                    "multi-objective RM, estimates KL(policy || reference) by Monte Carlo, adds Best-of-N from the "
                    "reference at its KL bound, and writes front.json, reward_vs_kl.png, objective_<a>_vs_<b>.png "
                    "and index.html.",
        flags=(flag("--runs", nargs="*", default=[], metavar="DIR",
                    help="Saved policy directories (none: only the reference, Best-of-N and DeAL points)."),
               flag("--output", required=True, metavar="DIR", help="Report directory."),
               flag("--reference", default="smollm2", help="Reference policy: alias, .gguf file, local directory or "
                                                           "hub id (KL is measured to it)."),
               flag("--reward-model", default="default",
                    help="Reward model: `default` (the shipped one, the default), a folder from train-rm, or a "
                         "Hugging Face sequence-classification folder or hub id."),
               flag("--prompts", help="Prompt file (JSONL/JSON/Parquet with 'prompt', or .txt); default: a seeded "
                                      "sample of --num-prompts short prompts from the bundled data."),
               flag("--num-prompts", type=positive_int, default=32, help="Prompts sampled from the bundled data."),
               flag("--samples-per-prompt", type=positive_int, default=4,
                    help="Responses per prompt for each policy."),
               flag("--bon", default="2,4,8,16", help="Best-of-N sizes from the reference ('' disables)."),
               flag("--deal", default="",
                    help="DeAL searches from the reference, guided by the same reward: semicolon-separated "
                         "beams,top_k,lookahead,lam,reward_every settings, e.g. '2,2,4,5,4;4,2,4,5,4' "
                         "(default: none)."),
               WEIGHTS,
               flag("--names", nargs="+", help="Display names of the runs, one per --runs directory."),
               flag("--objectives",
                    help="Objectives to plot pairwise, e.g. a,b,c (default: the 3 that vary most)."),
               MAX_NEW_TOKENS.but(default=64, help="Token limit per sampled response."),
               TEMPERATURE.but(help="Sampling temperature (KL is of the policy itself only at 1)."),
               SEED.but(help="Seed of the prompt sample and of sampling."),
               BATCH_ROWS,
               flag("--title", default="Reward–KL trade-off", help="Title of the report page and plots."),
               TRUST_ANY_MODEL)),
    Command(
        "demo", "Score examples per objective with the shipped default RM, then Best-of-4.", rm.cmd_demo,
        writes_folder=True,
        flags=(flag("--output-dir", default=None,
                    help="Train the default recipe (`train-rm` with no config) into this folder once and use it "
                         "instead of the shipped model (reused when it is already there)."),
               flag("--retrain", action="store_true",
                    help="With --output-dir: train again even if it already holds a reward model."),
               flag("--skip-bon", action="store_true", help="Skip the Best-of-4 sampling with the default policy."))),
    Command(
        "serve", "Serve the reward model (and optionally a policy) over HTTP, with a web explorer.", serve.cmd_serve,
        description="Endpoints: POST /v1/rewards, /get_reward (OpenRLHF), /classify and /score (vLLM shapes), "
                    "/v1/best-of-n (with --policy); GET /health, /v1/models, /metrics, and the explorer page at /. "
                    "Concurrent requests are micro-batched onto the reward model. Listens on 127.0.0.1 unless "
                    "--host says otherwise (which needs --api-key-file). SIGTERM / Ctrl-C: the requests in flight "
                    "finish, then the server exits 0.",
        flags=SERVE_FLAGS),
)
"""The commands, in the order `paretoalign --help` lists them."""

CONFIG_CLASSES = {c.name: c.config_classes[0] for c in COMMANDS if c.config_classes}
"""The config dataclass behind each config-driven command (its fields are listed in the command's --help)."""


def package_version() -> str:
    """The installed package's version (the source tree's `__version__` when it is not installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("paretoalign")
    except importlib.metadata.PackageNotFoundError:
        from paretoalign import __version__

        return __version__


class PrintVersion(argparse.Action):
    """--version: print `paretoalign VERSION` and exit 0 (the version is looked up only then: it takes ~0.1 s)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"paretoalign {package_version()}")
        parser.exit()


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, built from `commands`."""
    parser = HelpParser(prog="paretoalign", description="Multi-objective alignment of language models.")
    flag("--version", action=PrintVersion, help="show program's version number and exit").add_to(parser)
    DEBUG.add_to(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        p.config_classes = command.config_classes
        for option in (*command.flags, *((OVERWRITE,) if command.writes_folder else ()), THREADS,
                       DEBUG_AFTER_COMMAND):
            option.add_to(p)
        p.set_defaults(func=command.func, **command.defaults)
    return parser
