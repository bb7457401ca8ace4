"""Fine-tuned reward models on the shared training loop: Bradley–Terry (bt_finetune) and GRM (Yang et al. 2024).

bt_finetune: a causal LM backbone and a linear head ``score`` (no bias) on the final hidden state h (after the final
norm) at the last real token of a row: r(x, y) = score(h). Per pair L_BT = −log σ(r(x, y_w) − r(x, y_l) − m), m the
pair's ``margin`` with ``use_margin`` (0 where a pair has none, and without it), averaged over the pairs.

GRM ("Regularizing Hidden States Enables Learning Generalizable Reward Model for LLMs", Yang et al. 2024): the same
head on the same hidden states, with the LM head kept and trained through them; per pair

    L = (1 − α)·L_BT + α·L_reg,   α = grm_alpha (the paper's default 0.01),

where L_reg (``grm_regularizer``, β = grm_beta, 0.1 in the paper) is one of the paper's three regularisers,

- ``sft`` (the paper's best and default): −log σ(β log π(y_w|x)), log π summed over the chosen reply's tokens;
- ``dpo``: −log σ(β (log π/π_ref(y_w|x) − log π/π_ref(y_l|x))), π_ref the frozen initial LM (LoRA: the base with the
  adapters off) or ``reference``;
- ``dpo_noref``: the same without π_ref;

or ``sft_nll``, the chosen reply's mean token NLL −(1/|y_w|) Σ_t log π(y_t|x, y_<t), the plain SFT loss that
shared/reference/ALGORITHMS.md §14 writes (the paper wraps the summed log-likelihood in −log σ(β ·) instead).

Supports:

- any causal LM `load_causal_lm` accepts (the 'smollm2' alias, a directory, a .gguf file, a hub id) whose
  transformers ``*ForSequenceClassification`` class has a linear ``score`` head (Llama, Qwen2, Gemma, Mistral, GPT-2…);
- LoRA (the head is always trained in full) or full fine-tuning, gradient accumulation, clipping, accelerate,
  checkpoints every ``save_every`` steps with exact resume, metrics.jsonl per step, a progress bar — all of it
  `paretoalign.train.run`'s; the loss is a pluggable `RewardLoss`;
- one scalar head, or one head per objective (``per_objective_heads``): each pair's loss is on its own objective's
  head;
- pairs from a file, a sources config ('shared': ../shared/data) or the bundled pairs, one side of the project's
  held-out split; a validation slice held out by prompt whose pair accuracy goes into training.json;
- the output ``run_dir/reward_model``: a plain ``AutoModelForSequenceClassification`` folder (num_labels = heads,
  id2label = objective names, pad_token_id set, LoRA merged, safetensors, the tokenizer with its chat template) that
  transformers and TRL load unchanged, and OpenRLHF too (its ``value_head_prefix`` default "score" names our head;
  it reads one output, so use the scalar head there), with ``paretoalign_rm_classifier.json`` describing its input.

Assumes:

- a row is `conversation_text(prompt, response)` — the chat template of prompt + [assistant: response], the text
  ArmoRM's causal-LM backbone and `export-hf` use — tokenized at once and padded on the right; a row longer than
  max_length loses prompt tokens from the left first, then the reply's first tokens (its end, where the reward is
  read, is kept);
- the reward is read at the last attended token; Hugging Face classifiers take the rightmost token that is not the
  pad token, so the saved pad token is one that ends no training row (the tokenizer's own whenever it can be);
- dropout stays off (eval mode) as in every trainer here: a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paretoalign.data.schema import Message, PreferencePair
from paretoalign.errors import InputError
from paretoalign.output_paths import CLASSIFIER_FORMAT, CLASSIFIER_INFO_FILE
from paretoalign.train.dpo_trainer import batch_indices, dpo_loss, load_pairs, steps_for
from paretoalign.train.policy_setup import Reference, build_reference, initial_copy, is_peft_model
from paretoalign.train.rm_finetune_config import RMFinetuneConfig
from paretoalign.train.run import (
    TRAINING_RECORD,
    TrainingRun,
    check_run_dir,
    finish_run,
    start_run,
    warn_cut_rows,
    write_checkpoint,
)
from paretoalign.train.sequences import Row, RowBatch, collate_rows

HEAD = "score"
"""Name of the reward head: LlamaForSequenceClassification's (and OpenRLHF's default value_head_prefix)."""
SCALAR_LABEL = "reward"
CLASSIFIER_DIR = "reward_model"
"""The saved sequence classifier inside a run directory."""
VALIDATION_KEY = "rm-validation"
"""Salt of the validation slice's hash, so it is independent of the project's train/test split."""


class Tokenizer(Protocol):
    """The part of a transformers tokenizer this module uses."""

    pad_token_id: int | None
    eos_token_id: int | None
    is_fast: bool

    def __call__(self, text: list[str], **kwargs: Any) -> Any: ...

    def convert_ids_to_tokens(self, ids: int) -> str: ...


class Module(Protocol):
    """A torch module called with token batches (a causal LM, a peft wrapper, a sequence classifier)."""

    config: Any

    def __call__(self, **kwargs: Any) -> Any: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


# ---------------------------------------------------------------- rows
@dataclass
class RMPair:
    """A preference pair as two token rows, the head it trains and its margin."""

    chosen: Row
    rejected: Row
    head: int
    margin: float
    cut: int
    """How many of its two rows were longer than max_length."""


def encode_conversations(tokenizer: Tokenizer, prompts: Sequence[list[Message]], responses: Sequence[str],
                         max_length: int) -> list[tuple[Row, bool]]:
    """(token row, whether it was cut) of each `conversation_text(prompt, response)`, tokenized at once."""
    from paretoalign.embed.causal_lm import _prompt_token_count, _truncate
    from paretoalign.embed.chat_format import conversation_text

    rendered = [conversation_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    texts = [t for t, _ in rendered]
    if not texts:
        return []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        counts = [_prompt_token_count(off, s) for off, (_, s) in zip(enc["offset_mapping"], rendered, strict=True)]
    else:  # slow tokenizers have no offsets: the prompt part is tokenized on its own
        enc = tokenizer(texts, add_special_tokens=False)
        counts = [len(h) for h in tokenizer([t[:s] for t, s in rendered], add_special_tokens=False)["input_ids"]]
    out = []
    for ids, n_prompt in zip(enc["input_ids"], counts, strict=True):
        if len(ids) < 2:
            raise InputError("a (prompt, reply) row renders to fewer than 2 tokens", field="prompt")
        row = _truncate(list(ids), n_prompt, max_length)
        kept_prompt = row.prompt_pos + 1 if n_prompt > 0 else 0
        out.append(((row.ids, min(kept_prompt, len(row.ids) - 1)), row.prompt_cut or row.response_cut))
    return out


def encode_rm_pairs(tokenizer: Tokenizer, pairs: Sequence[PreferencePair], max_length: int,
                    heads: Sequence[str] | None, use_margin: bool) -> list[RMPair]:
    """Token rows of every pair, with its head index (its objective's among `heads`; None: one scalar head, 0)
    and its margin (0 without `use_margin` or a margin)."""
    index = {name: i for i, name in enumerate(heads or ())}
    rows = encode_conversations(tokenizer, [p.prompt for p in pairs] * 2,
                                [p.chosen for p in pairs] + [p.rejected for p in pairs], max_length)
    n = len(pairs)
    out = []
    for i, pair in enumerate(pairs):
        head = 0 if heads is None else index[str(pair.objective)]
        margin = float(pair.margin) if use_margin and pair.margin is not None else 0.0
        (c, c_cut), (r, r_cut) = rows[i], rows[n + i]
        out.append(RMPair(c, r, head, margin, int(c_cut) + int(r_cut)))
    return out


def choose_pad_id(tokenizer: Tokenizer, rows: Sequence[Row]) -> int:
    """A pad id no row ends with (the tokenizer's pad, else eos, unk, bos, another special token); sets it on the
    tokenizer when it changes, so the saved classifier's rightmost-non-pad rule finds every row's last token."""
    last = {ids[-1] for ids, _ in rows}
    candidates = [tokenizer.pad_token_id, tokenizer.eos_token_id, getattr(tokenizer, "unk_token_id", None),
                  getattr(tokenizer, "bos_token_id", None), *getattr(tokenizer, "all_special_ids", [])]
    for candidate in candidates:
        if candidate is not None and int(candidate) not in last:
            if candidate != tokenizer.pad_token_id:
                tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(candidate))
            return int(candidate)
    raise InputError("every special token of the tokenizer ends some row, so none can serve as the pad token of "
                     "the saved classifier", field="model")


# ---------------------------------------------------------------- data
def load_rm_pairs(config: RMFinetuneConfig) -> list[PreferencePair]:
    """The pairs `config` names (data file, sources config or the bundled pairs), one split side, max_pairs."""
    if config.sources is not None:
        from paretoalign.data.bundled import shared_data_config
        from paretoalign.data.sources import load_sources_config, load_training_data, restrict_to_split

        if config.sources == "shared":
            sources = shared_data_config(str(config.shared_dir))
        else:
            shared = Path(config.shared_dir) if config.shared_dir else None
            sources = load_sources_config(config.sources, shared_dir=shared)
        pairs = load_training_data(restrict_to_split(sources, config.split)).pairs
        if config.objective is not None:
            pairs = [p for p in pairs if p.objective == config.objective]
            if not pairs:
                raise InputError(f"no pair has objective {config.objective!r}", path=config.sources,
                                 field="objective")
    else:
        pairs = load_pairs(config.data, config.objective, None)
        if config.split is not None:
            from paretoalign.data.splits import split_of

            pairs = [p for p in pairs if split_of(p.prompt) == config.split]
    if config.max_pairs is not None:
        pairs = pairs[:config.max_pairs]
    if not pairs:
        raise InputError("no preference pairs" + (f" on the {config.split!r} side" if config.split else ""),
                         path=config.data or config.sources, field="data")
    return pairs


def head_names(config: RMFinetuneConfig, pairs: Sequence[PreferencePair]) -> list[str]:
    """The heads: ['reward'] for one scalar head, else the objectives (config order, or sorted from the data)."""
    if not config.per_objective_heads:
        return [SCALAR_LABEL]
    for p in pairs:
        if p.objective is None:
            raise InputError("per_objective_heads=true needs an objective on every pair; this one has none",
                             path=p.source or None, field="objective")
    present = sorted({str(p.objective) for p in pairs})
    if config.objectives is None:
        return present
    absent = [o for o in config.objectives if o not in present]
    if absent:
        raise InputError(f"no pair has objective(s) {absent}; the data has {present}", field="objectives")
    return list(config.objectives)


def validation_split(pairs: Sequence[PreferencePair], fraction: float, seed: int
                     ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, validation): about `fraction` of the prompts, by a seeded hash, with all their pairs."""
    if fraction == 0:
        return list(pairs), []
    from paretoalign.data.splits import heldout_split, prompt_key

    side = [heldout_split(f"{VALIDATION_KEY}\x1f{prompt_key(p.prompt)}", fraction=fraction, seed=seed)
            for p in pairs]
    train = [p for p, s in zip(pairs, side, strict=True) if s == "train"]
    val = [p for p, s in zip(pairs, side, strict=True) if s == "test"]
    if not train:
        raise InputError(f"val_fraction={fraction} leaves no pair to train on ({len(pairs)} pairs)",
                         field="val_fraction")
    return train, val


# ---------------------------------------------------------------- model
def attach_score_head(model: nn.Module, num_labels: int, seed: int) -> nn.Linear:
    """Add a seeded linear head ``score`` (hidden -> num_labels, no bias) to a causal LM, on its device and dtype."""
    if hasattr(model, HEAD):
        raise InputError(f"the model already has a module named {HEAD!r}; give a plain causal LM", field="model")
    text = model.config.get_text_config()
    hidden = int(text.hidden_size)
    std = float(getattr(text, "initializer_range", None) or 0.02)
    weight = torch.empty(num_labels, hidden).normal_(0.0, std, generator=torch.Generator().manual_seed(seed))
    ref = next(model.parameters())
    head = nn.Linear(hidden, num_labels, bias=False).to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        head.weight.copy_(weight)
    setattr(model, HEAD, head)
    return head


def score_head(policy: nn.Module) -> nn.Module:
    """The reward head of a (LoRA-wrapped) training model."""
    base = policy.get_base_model() if is_peft_model(policy) else policy
    return getattr(base, HEAD)


@dataclass
class RowOutputs:
    """What one forward pass over rows gives: rewards at the last token and summed response log-probs."""

    rewards: torch.Tensor | None
    """(rows, heads), float32; None without a head."""
    logp_sums: torch.Tensor | None
    """(rows,) sum of log π(token) over the response tokens of the rows asked for (0 elsewhere)."""
    token_counts: torch.Tensor | None


def forward_rows(model: Module, head: nn.Module | None, batch: RowBatch, lm_rows: torch.Tensor | None = None
                 ) -> RowOutputs:
    """One forward pass: the head on the final hidden state at each row's last attended token and, for the rows in
    the boolean `lm_rows`, the LM head's log-probs of their response tokens (logits only where needed)."""
    device = next(model.parameters()).device
    batch = batch.to(device)
    keep: int | torch.Tensor = 1
    if lm_rows is not None:
        mask = torch.zeros_like(batch.response_mask)
        mask[:, :-1] = batch.response_mask[:, 1:] & lm_rows.to(device).unsqueeze(1)
        keep = mask
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False, output_hidden_states=head is not None, logits_to_keep=keep)
    rewards = None
    if head is not None:
        hidden = out.hidden_states[-1]
        last = batch.attention_mask.sum(dim=1) - 1
        rewards = head(hidden[torch.arange(hidden.shape[0], device=device), last]).float()
    if lm_rows is None:
        return RowOutputs(rewards, None, None)
    logits = out.logits
    if logits.dim() == 3:  # a model that computed every position
        logits = logits[keep]
    targets = batch.input_ids[:, 1:][keep[:, :-1]]
    logps = logits.float().log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    row = keep.nonzero()[:, 0]
    n = batch.input_ids.shape[0]
    sums = torch.zeros(n, dtype=logps.dtype, device=logps.device).index_add(0, row, logps)
    counts = torch.zeros(n, dtype=logps.dtype, device=logps.device).index_add(0, row, torch.ones_like(logps))
    return RowOutputs(rewards, sums, counts)


# ---------------------------------------------------------------- losses
@dataclass
class PairScores:
    """Per pair (n,): rewards on its head, its margin and, when the loss asks, LM log-probs of its replies."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    margin: torch.Tensor
    chosen_logp: torch.Tensor | None = None
    chosen_tokens: torch.Tensor | None = None
    rejected_logp: torch.Tensor | None = None
    ref_chosen_logp: torch.Tensor | None = None
    ref_rejected_logp: torch.Tensor | None = None


class RewardLoss(Protocol):
    """A pairwise reward-model loss: which LM log-probs it needs and its per-pair value and parts."""

    lm_rows: str
    """'none', 'chosen' or 'both': the rows whose response log-probs the loss needs."""
    needs_reference: bool

    def __call__(self, scores: PairScores) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def bt_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-pair Bradley–Terry loss −log σ(r_w − r_l − m)."""
    return -F.logsigmoid(chosen - rejected - margin)


def grm_regularizer(kind: str, beta: float, scores: PairScores) -> torch.Tensor:
    """Per-pair GRM regulariser L_reg (see the module docstring)."""
    if kind == "sft":
        return -F.logsigmoid(beta * scores.chosen_logp)
    if kind == "sft_nll":
        return -scores.chosen_logp / scores.chosen_tokens.clamp(min=1)
    if kind == "dpo":
        return dpo_loss(scores.chosen_logp, scores.rejected_logp, scores.ref_chosen_logp,
                        scores.ref_rejected_logp, beta)[0]
    if kind == "dpo_noref":
        zero = torch.zeros_like(scores.chosen_logp)
        return dpo_loss(scores.chosen_logp, scores.rejected_logp, zero, zero, beta)[0]
    raise InputError(f"unknown GRM regulariser {kind!r}", field="grm_regularizer")


@dataclass(frozen=True)
class BTLoss:
    """bt_finetune: L_BT only."""

    lm_rows: str = "none"
    needs_reference: bool = False

    def __call__(self, scores: PairScores) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-pair losses and their parts."""
        bt = bt_loss(scores.chosen, scores.rejected, scores.margin)
        return bt, {"bt_loss": bt}


@dataclass(frozen=True)
class GRMLoss:
    """GRM: (1 − alpha)·L_BT + alpha·L_reg (the regulariser is computed, and logged, even at alpha = 0)."""

    alpha: float
    regularizer: str = "sft"
    beta: float = 0.1

    @property
    def lm_rows(self) -> str:
        """The rows whose log-probs the regulariser needs."""
        return "chosen" if self.regularizer in ("sft", "sft_nll") else "both"

    @property
    def needs_reference(self) -> bool:
        """Whether the regulariser needs π_ref."""
        return self.regularizer == "dpo"

    def __call__(self, scores: PairScores) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-pair losses and their parts."""
        bt = bt_loss(scores.chosen, scores.rejected, scores.margin)
        reg = grm_regularizer(self.regularizer, self.beta, scores)
        return (1.0 - self.alpha) * bt + self.alpha * reg, {"bt_loss": bt, "reg_loss": reg}


def reward_loss(config: RMFinetuneConfig) -> RewardLoss:
    """The loss of `config.method`."""
    if config.method == "grm":
        return GRMLoss(config.grm_alpha, config.grm_regularizer, config.grm_beta)
    return BTLoss()


def pair_scores(model: Module, head: nn.Module, pairs: Sequence[RMPair], pad_id: int, loss: RewardLoss,
                reference: Reference | None = None) -> PairScores:
    """Rewards of both replies of each pair on the pair's head, in one forward pass, plus the loss's log-probs."""
    n = len(pairs)
    batch = collate_rows([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    lm_rows = None
    if loss.lm_rows != "none":
        lm_rows = torch.tensor([True] * n + [loss.lm_rows == "both"] * n)
    out = forward_rows(model, head, batch, lm_rows)
    rewards = out.rewards
    heads = torch.tensor([p.head for p in pairs], device=rewards.device).unsqueeze(1)
    scores = PairScores(chosen=rewards[:n].gather(1, heads).squeeze(1),
                        rejected=rewards[n:].gather(1, heads).squeeze(1),
                        margin=torch.tensor([p.margin for p in pairs], device=rewards.device))
    if out.logp_sums is not None:
        scores.chosen_logp, scores.rejected_logp = out.logp_sums[:n], out.logp_sums[n:]
        scores.chosen_tokens = out.token_counts[:n]
    if loss.needs_reference:
        if reference is None:
            raise ValueError("this loss needs the reference model")
        with reference.active() as ref_model:
            ref = forward_rows(ref_model, None, batch, lm_rows).logp_sums.to(rewards.device)
        scores.ref_chosen_logp, scores.ref_rejected_logp = ref[:n], ref[n:]
    return scores


@torch.no_grad()
def pair_rewards(model: Module, head: nn.Module, pairs: Sequence[RMPair], pad_id: int, batch_size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) rewards of every pair on its own head, without gradients."""
    chosen, rejected = [], []
    for lo in range(0, len(pairs), batch_size):
        s = pair_scores(model, head, pairs[lo:lo + batch_size], pad_id, BTLoss())
        chosen.append(s.chosen.double().cpu().numpy())
        rejected.append(s.rejected.double().cpu().numpy())
    if not chosen:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(chosen), np.concatenate(rejected)


# ---------------------------------------------------------------- the saved classifier
def to_sequence_classifier(model: nn.Module, labels: Sequence[str], pad_id: int, *,
                           trust_remote_code: bool = False) -> nn.Module:
    """The plain ``*ForSequenceClassification`` model of a merged causal LM with a ``score`` head: the same base
    weights (shared, not copied), the head as ``score.weight``, num_labels/id2label/pad_token_id set."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForSequenceClassification

    head = getattr(model, HEAD)
    config = copy.deepcopy(model.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = "regression"
    for c in {id(c): c for c in (config, config.get_text_config())}.values():
        c.pad_token_id = int(pad_id)
    try:
        with init_empty_weights():
            classifier = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise InputError(f"transformers has no sequence-classification class for {type(model).__name__}: {exc}",
                         field="model") from None
    target = getattr(classifier, HEAD, None)
    if not isinstance(target, nn.Linear) or tuple(target.weight.shape) != tuple(head.weight.shape):
        raise InputError(f"{type(classifier).__name__} has no linear {HEAD!r} head of shape "
                         f"{tuple(head.weight.shape)}; this architecture is not supported", field="model")
    base = getattr(model, model.base_model_prefix)
    getattr(classifier, classifier.base_model_prefix).load_state_dict(base.state_dict(), strict=True, assign=True)
    target.load_state_dict({"weight": head.weight.detach()}, strict=True, assign=True)
    device = next(model.parameters()).device
    return classifier.to(device).eval()


def classifier_info(config: RMFinetuneConfig, labels: Sequence[str], pad_id: int, pad_changed: bool) -> dict[str, Any]:
    """The marker file of a saved classifier: its format, heads and how its input rows are written."""
    from paretoalign import __version__

    return {"format": CLASSIFIER_FORMAT, "format_version": 1, "paretoalign_version": __version__,
            "method": config.method, "objectives": list(labels), "num_labels": len(labels),
            "head": HEAD, "base_model": config.model,
            "input": "tokenizer.apply_chat_template(prompt + [{'role': 'assistant', 'content': response}], "
                     "tokenize=False), tokenized with add_special_tokens=False (no chat template: paretoalign's "
                     "plain 'role: content' lines); right padding; the reward is the logit at the last real token",
            "max_length": config.max_length, "pad_token_id": int(pad_id), "pad_token_changed": bool(pad_changed),
            "padding_side": "right"}


README = """# paretoalign fine-tuned reward model ({method})

A `{arch}` with {k} reward output(s) {labels}, trained by `paretoalign train-rm method={method}` on preference pairs
(Bradley–Terry{grm}). Load it with `AutoModelForSequenceClassification.from_pretrained(path)`; TRL and OpenRLHF
(`value_head_prefix="score"`, scalar head) load it unchanged.

Score a reply like the trainer did: render `prompt + [{{"role": "assistant", "content": response}}]` with the saved
chat template (`tokenize=False`), tokenize with `add_special_tokens=False`, pad on the right, and read
`model(**batch).logits` (the logit at the last non-pad token). Rows were cut to {max_length} tokens (the prompt from
the left). Details: `{info}`.
"""


def save_reward_classifier(model: nn.Module, tokenizer: Tokenizer, directory: str | Path, record: dict[str, Any], *,
                           info: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a sequence classifier (safetensors), its tokenizer, README, marker and training record atomically.

    `directory` must be missing, empty or a previous classifier (`output_paths.FINETUNED_RM`), unless `overwrite`."""
    from paretoalign.atomic_io import atomic_directory, write_json_atomic
    from paretoalign.embed.models import no_progress_bars
    from paretoalign.output_paths import FINETUNED_RM, check_output_dir

    check_output_dir(directory, FINETUNED_RM, overwrite=overwrite, field="output_dir")
    labels = info["objectives"]
    readme = README.format(method=info["method"], arch=type(model).__name__, k=len(labels), labels=labels,
                           grm=", GRM regulariser" if info["method"] == "grm" else "", max_length=info["max_length"],
                           info=CLASSIFIER_INFO_FILE)
    with atomic_directory(directory) as tmp, no_progress_bars():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        write_json_atomic(tmp / CLASSIFIER_INFO_FILE, info)
        write_json_atomic(tmp / TRAINING_RECORD, record)
    return Path(directory)


# ---------------------------------------------------------------- training
def _mean(parts: list[torch.Tensor]) -> float:
    return float(torch.cat(parts).float().mean()) if parts else float("nan")


def train_reward_finetune(config: RMFinetuneConfig, pairs: Sequence[PreferencePair] | None = None, *,
                          model: nn.Module | None = None, tokenizer: Tokenizer | None = None, overwrite: bool = False,
                          deadline: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a bt_finetune or GRM reward model; returns (the sequence classifier in eval mode, stats).

    ``config.output_dir`` (the run: checkpoint/, metrics.jsonl, training.json, reward_model/) must be missing, empty
    or a run of the same method (resumed); any other folder only with `overwrite`. Checked before anything loads.
    `pairs` replaces the configured data. A `model` object (with its `tokenizer`) gets the head attached and, with
    LoRA, is wrapped in place. `deadline`: a ``time.perf_counter()`` value after which no new step starts (a
    checkpoint is written and the model saved; the same config resumes from there).
    """
    method = config.method
    check_run_dir(method, config, overwrite=overwrite)
    pairs = load_rm_pairs(config) if pairs is None else list(pairs)
    if not pairs:
        raise InputError("no preference pairs to train on", field="data")
    labels = head_names(config, pairs)
    if config.per_objective_heads:
        pairs = [p for p in pairs if p.objective in labels]
    train_pairs, val_pairs = validation_split(pairs, config.val_fraction, config.seed)
    total = steps_for(len(train_pairs), config.batch_size, config.epochs, config.max_steps)
    loss = reward_loss(config)
    if model is None:
        from paretoalign.embed.models import load_causal_lm

        model, loaded = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
        tokenizer = tokenizer if tokenizer is not None else loaded
    elif tokenizer is None:
        raise InputError("a model object needs its tokenizer: pass tokenizer=...", field="tokenizer")
    rm_tokenizer = copy.deepcopy(tokenizer)  # the saved one: right padding, maybe another pad token
    rm_tokenizer.padding_side = "right"
    heads = labels if config.per_objective_heads else None
    encoded = encode_rm_pairs(rm_tokenizer, train_pairs, config.max_length, heads, config.use_margin)
    val_encoded = encode_rm_pairs(rm_tokenizer, val_pairs, config.max_length, heads, config.use_margin)
    old_pad = rm_tokenizer.pad_token_id
    pad_id = choose_pad_id(rm_tokenizer, [r for p in encoded + val_encoded for r in (p.chosen, p.rejected)])
    attach_score_head(model, len(labels), config.seed)
    needs_initial = loss.needs_reference and not config.lora and config.reference is None
    initial = initial_copy(config, model) if needs_initial else None
    run = start_run(method, config, total, model=model, tokenizer=tokenizer, overwrite=overwrite,
                    trainable_modules=(HEAD,))
    reference = build_reference(run.policy, config, initial) if loss.needs_reference else None
    head = score_head(run.policy)
    cut_rows = sum(p.cut for p in encoded)
    warn_cut_rows(run, method, cut_rows, len(encoded),
                  rule="prompt from the left first, then the reply's first tokens")
    micro = config.micro_batch_size or config.batch_size
    stopped_early = False
    for epoch, indices in batch_indices(len(encoded), config.batch_size, config.seed, run.step, total):
        if deadline is not None and time.perf_counter() >= deadline:
            stopped_early = True
            break
        _train_step(run, head, loss, reference, [encoded[i] for i in run.shard(indices)], micro, pad_id, epoch)
    write_checkpoint(run)
    validation = _validate(run, head, val_encoded, labels, pad_id, micro)
    stats = {"num_pairs": len(encoded), "heads": labels, "truncated_rows": cut_rows, "total_rows": 2 * len(encoded),
             "pad_token_id": pad_id, "validation": validation, "steps": run.step,
             "stopped_at_deadline": stopped_early, "complete": run.done}
    if validation["pairs"] and run.accelerator.is_main_process:
        print(f"{method}: validation accuracy {validation['accuracy']:.3f} on {validation['pairs']} held-out pairs",
              file=sys.stderr)
    run.tokenizer = rm_tokenizer
    info = classifier_info(config, labels, pad_id, pad_id != old_pad)
    prepare = partial(to_sequence_classifier, labels=labels, pad_id=pad_id, trust_remote_code=config.trust_remote_code)
    classifier = finish_run(run, stats, prepare=prepare, save=partial(save_reward_classifier, info=info),
                            output_name=CLASSIFIER_DIR)
    return classifier, stats


def _train_step(run: TrainingRun, head: nn.Module, loss: RewardLoss, reference: Reference | None,
                batch: list[RMPair], micro: int, pad_id: int, epoch: int) -> None:
    parts: dict[str, list[torch.Tensor]] = {"loss": [], "chosen": [], "rejected": []}
    for m in range(0, len(batch), micro):
        scores = pair_scores(run.model, head, batch[m:m + micro], pad_id, loss, reference)
        losses, terms = loss(scores)
        run.backward(losses.sum() / len(batch))
        parts["loss"].append(losses.detach())
        parts["chosen"].append(scores.chosen.detach())
        parts["rejected"].append(scores.rejected.detach())
        for name, value in terms.items():
            parts.setdefault(name, []).append(value.detach())
    norm = run.optimizer_step()
    chosen, rejected = torch.cat(parts["chosen"]).float().cpu(), torch.cat(parts["rejected"]).float().cpu()
    record = {"epoch": epoch, "loss": _mean(parts["loss"]), "bt_loss": _mean(parts["bt_loss"])}
    if "reg_loss" in parts:
        record["reg_loss"] = _mean(parts["reg_loss"])
    record.update({"accuracy": float((chosen > rejected).float().mean()),
                   "reward_margin": float((chosen - rejected).mean()), "chosen_reward": float(chosen.mean()),
                   "rejected_reward": float(rejected.mean()), "grad_norm": norm})
    run.log(record)
    if run.checkpoint_due():
        write_checkpoint(run)


def _validate(run: TrainingRun, head: nn.Module, encoded: list[RMPair], labels: list[str], pad_id: int,
              batch_size: int) -> dict[str, Any]:
    """Pair accuracy (ties count 1/2) of the trained model on the validation slice, overall and per head."""
    if not encoded:
        return {"pairs": 0, "accuracy": None}
    chosen, rejected = pair_rewards(run.policy, head, encoded, pad_id, batch_size)
    outcomes = np.where(chosen > rejected, 1.0, np.where(chosen < rejected, 0.0, 0.5))  # as eval.pairwise counts
    out: dict[str, Any] = {"pairs": len(encoded), "accuracy": float(outcomes.mean()),
                           "reward_margin": float(np.mean(chosen - rejected))}
    if len(labels) > 1:
        heads = np.array([p.head for p in encoded])
        out["per_head"] = {name: {"pairs": int((heads == i).sum()), "accuracy": float(outcomes[heads == i].mean())}
                           for i, name in enumerate(labels) if (heads == i).any()}
    return out


# ---------------------------------------------------------------- scoring a saved classifier
@torch.no_grad()
def classifier_rewards(model: Module, tokenizer: Tokenizer, prompts: Sequence[list[Message]],
                       responses: Sequence[str], *, max_length: int, batch_size: int = 16) -> np.ndarray:
    """(rows, num_labels) logits of a plain sequence classifier (its own forward: the rightmost non-pad token) on
    rows written as the trainer writes them (length-sorted right-padded batches)."""
    rows = [r for r, _ in encode_conversations(tokenizer, prompts, responses, max_length)]
    pad = model.config.pad_token_id
    pad = int(pad) if pad is not None else int(tokenizer.pad_token_id or 0)
    device = next(model.parameters()).device
    out = np.zeros((len(rows), int(model.config.num_labels)), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    for lo in range(0, len(order), batch_size):
        index = order[lo:lo + batch_size]
        batch = collate_rows([rows[i] for i in index], pad).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        out[index] = logits.double().cpu().numpy()
    return out


def read_classifier_info(directory: str | Path) -> dict[str, Any] | None:
    """The marker of a saved classifier folder, or None when it is not one."""
    path = Path(directory) / CLASSIFIER_INFO_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == CLASSIFIER_FORMAT else None

