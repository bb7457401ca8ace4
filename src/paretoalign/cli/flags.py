"""Command-line flags as data, and the flag groups several commands share (each declared once here)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paretoalign import output_paths as outputs
from paretoalign.cli.args import non_negative_float, non_negative_int, positive_int, probability


@dataclass(frozen=True)
class Flag:
    """One `add_argument` call: its names (or positional dest) and keyword options."""

    names: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def but(self, **changes: Any) -> Flag:
        """This flag with some options changed (e.g. another default or help text)."""
        return Flag(self.names, {**self.options, **changes})

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add this flag to `parser`."""
        parser.add_argument(*self.names, **self.options)


def flag(*names: str, **options: Any) -> Flag:
    """A Flag from the arguments `add_argument` would take."""
    return Flag(names, options)


RM_REFERENCE_HELP = ("Reward model: a folder from train-rm, `default` (the shipped one), or a Hugging Face "
                     "sequence-classification folder or hub id (one objective per label).")
DEBUG_HELP = "On an error, print the full Python traceback too (also: PARETOALIGN_DEBUG=1)."
_NEVER_FROM_A_SAVED_MODEL = "; off by default, and a saved model can never turn it on."


def trust_remote_code(folders: str, *, plural: bool) -> Flag:
    """--trust-remote-code, naming the folders of the command that it lets run their own Python code."""
    return flag("--trust-remote-code", action="store_true",
                help=f"Allow {folders} to run {'their' if plural else 'its'} own Python code (an auto_map)"
                     f"{_NEVER_FROM_A_SAVED_MODEL}")


def config_flags(config_help: str, output_dir_help: str, overrides_help: str) -> tuple[Flag, ...]:
    """--config FILE, --output-dir DIR and the key=value overrides of a config-driven command."""
    return (flag("--config", help=config_help), flag("--output-dir", help=output_dir_help),
            flag("overrides", nargs="*", help=overrides_help))


# ---------------------------------------------------------------- single flags shared by several commands
TRUST_ANY_MODEL = trust_remote_code("the model folders this command loads (policies, the reward model or its "
                                    "backbone)", plural=True)
TRUST_RM = trust_remote_code("the reward model's folder (a classifier) or its backbone folder", plural=False)
WEIGHTS = flag("--weights", help="Objective weights name=value,... (default: the RM's gating).")
BATCH_ROWS = flag("--batch-rows", type=positive_int, default=32, help="Candidates generated together.")
QUIET = flag("--quiet", action="store_true", help="No progress bar.")
MAX_NEW_TOKENS = flag("--max-new-tokens", type=positive_int, default=128,
                      help="Token limit per response; a candidate that reaches it is unfinished (%(default)s).")
TEMPERATURE = flag("--temperature", type=non_negative_float, default=1.0,
                   help="Sampling temperature (default %(default)s).")
SEED = flag("--seed", type=int, default=0,
            help="Sampling seed: candidate j of prompt i draws from a generator seeded by (seed, i, j).")


# ---------------------------------------------------------------- groups
SAMPLING = (
    TEMPERATURE,
    flag("--top-p", type=probability, default=1.0,
         help="Nucleus sampling: keep the smallest set of tokens with this total probability (1: off)."),
    flag("--top-k", type=non_negative_int, default=0, help="Sample among the k most likely tokens (0: off)."),
    MAX_NEW_TOKENS,
    flag("--stop", action="append", help="A stop string (repeat the flag for several)."),
    SEED,
)
"""The sampling flags (read by `sampling_params_from_args`)."""


def generation_flags(with_rm: bool = True) -> tuple[Flag, ...]:
    """Flags shared by the commands that sample from a policy (and, `with_rm`, score with an RM)."""
    policy = flag("--policy", default="smollm2",
                  help="Policy model: alias (smollm2, gemma3-270m), .gguf file, local directory or hub id.")
    prompts = flag("--prompts", required=True, help="Prompt rows: JSONL/JSON/Parquet with a 'prompt' field (string "
                                                    "or messages), or a .txt file with one prompt per line.")
    rm = (flag("--rm", required=True, help=RM_REFERENCE_HELP),) if with_rm else ()
    scoring = (WEIGHTS, BATCH_ROWS) if with_rm else ()
    return (policy, *rm, prompts, *scoring, *SAMPLING, TRUST_ANY_MODEL,
            flag("--output", required=True, help="Output file (written atomically when everything is done)."),
            QUIET.but(help="No progress bars."))


GENERATION = generation_flags(with_rm=True)
"""bon / calibrate: policy, reward model, prompts, weights, sampling, output."""
GENERATION_WITHOUT_RM = generation_flags(with_rm=False)
"""guided: policy, prompts, sampling, output (its reward LMs have their own flag)."""

OVERWRITE = flag("--overwrite", action="store_true", help=outputs.OVERWRITE_HELP)
"""On the commands that write an output folder."""
THREADS = flag("--threads", default=None, metavar="auto|N|torch",
               help="CPU threads: 'auto' (default; the CPUs this process may use, fewer while other processes keep "
                    "cores busy), a fixed N, or 'torch' (leave torch's own setting and the OpenMP environment "
                    "alone). Default from PARETOALIGN_THREADS.")
"""On every command (the CPU threads torch may use; see paretoalign.threads)."""
DEBUG = flag("--debug", action="store_true", help=DEBUG_HELP)
"""Before the command name."""
DEBUG_AFTER_COMMAND = DEBUG.but(default=argparse.SUPPRESS)
"""After the command name too (SUPPRESS: a global --debug is kept when this one is not given)."""
