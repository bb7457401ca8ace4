"""What several command families share at run time: a run's config and output folder, sampling settings, the prompt
length check, and Ctrl-C during training."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoalign import output_paths as outputs
from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.embed.protocols import Tokenizer


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command, with what the user should know about its output (e.g. a resumable checkpoint)."""

    def __init__(self, note: str = "") -> None:
        super().__init__(note)
        self.note = note


def load_run_config(args: argparse.Namespace, config_cls: type,
                    kind: outputs.OutputKind | Callable[[Any], outputs.OutputKind], *, inputs: Iterable[Any] = (),
                    ignore: tuple[str, ...] = ()) -> Any:
    """The config of a config-driven command (--config, overrides, --output-dir), once its output folder is checked
    (`kind`, or `kind(config)`, is the output the folder must hold to be replaced; `inputs` beside the config's
    own input paths must not be overwritten)."""
    from paretoalign.config_loading import load_config

    config = load_config(config_cls, args.config, args.overrides, ignore=ignore, output_dir=args.output_dir)
    output_kind = kind if isinstance(kind, outputs.OutputKind) else kind(config)
    outputs.check_output_dir(config.output_dir, output_kind, overwrite=args.overwrite,
                             inputs=[args.config, *inputs, *outputs.config_input_paths(config)])
    return config


def sampling_params_from_args(args: argparse.Namespace):
    """SamplingParams from the shared sampling flags."""
    from paretoalign.inference.sampling_params import SamplingParams

    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          max_new_tokens=args.max_new_tokens, stop=tuple(args.stop or ()), seed=args.seed)


def check_prompts_fit(tokenizer: Tokenizer, context_length: int | None, rows, max_new_tokens: int) -> None:
    """Before sampling: InputError naming the file and line of the first prompt that leaves the model no room for
    `max_new_tokens` tokens."""
    from paretoalign.data.records import location_error
    from paretoalign.embed.chat_format import encode_prompts

    for r in rows:
        try:
            encode_prompts(tokenizer, context_length, [r.messages], max_new_tokens)
        except InputError as exc:
            raise location_error(exc.reason.replace("prompt 0 is", "the prompt is"), r.location, "prompt") from None


@contextlib.contextmanager
def removed_on_interrupt(run_dir: str | None) -> Iterator[None]:
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


def merged_rows(rows, results) -> list[dict]:
    """Each input row's fields updated with its result's `row()` (the output rows of bon, speculative and deal)."""
    out_rows = []
    for r, res in zip(rows, results, strict=True):
        out = dict(r.row)
        out.update(res.row())
        out_rows.append(out)
    return out_rows
