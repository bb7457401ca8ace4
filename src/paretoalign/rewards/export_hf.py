"""Export a causal-LM reward model with fixed objective weights as a plain transformers sequence classifier.

With fixed weights w the score is linear in the features: R_w(x, y) = sum_i w_i r'_i = u . h(x, y) with
u = w^T T W (`RewardModel.linear_score_vector`). h(x, y) is the backbone's final hidden state at the last token of
`conversation_text(prompt, response)`, so the backbone with a one-output linear head u (`score.weight = u`, no bias)
is a `*ForSequenceClassification` model whose logit is exactly R_w.

Why the token matches: Hugging Face sequence classifiers read the logits at the rightmost token that is not the pad
token. Our feature is the hidden state at the last token of the text. The two coincide whenever the text's last token
is not the pad token, which holds for ChatML-style templates with a distinct pad token (the text ends with the
end-of-turn marker and a newline, e.g. "<|im_end|>\\n"). Right padding leaves the real tokens' hidden states unchanged
(causal attention), so batched scoring gives the same logits.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoalign import __version__
from paretoalign.atomic_io import atomic_directory
from paretoalign.embed.chat_format import PLAIN_ASSISTANT_PREFIX, has_chat_template
from paretoalign.embed.models import check_remote_code, no_progress_bars, quiet_transformers
from paretoalign.errors import InputError
from paretoalign.output_paths import HF_EXPORT_FORMAT
from paretoalign.output_paths import HF_EXPORT_INFO_FILE as EXPORT_INFO_FILE
from paretoalign.rewards.reward_model import RewardModel, Weights


def _readme(*, weights: dict[str, float], chat_template: bool, pad_from_eos: bool, spec: dict[str, Any]) -> str:
    terms = " + ".join(f"{w:g}·{name}" for name, w in weights.items() if w != 0)
    if chat_template:
        text_line = ('text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}],\n'
                     '                                     tokenize=False)')
    else:
        text_line = ('text = "".join(f"{m[\'role\']}: {m[\'content\']}\\n" for m in prompt) + '
                     f'"{PLAIN_ASSISTANT_PREFIX}" + response')
    notes = []
    if pad_from_eos:
        notes.append("- The backbone's tokenizer had no pad token; the export uses its eos token as pad. A text whose "
                     "last token is that eos token would be read one token early, so score such texts one at a time "
                     "(batch size 1, no padding).")
    max_length = spec.get("max_length")
    if max_length:
        notes.append(f"- The reward model embedded at most {max_length} tokens per row, cutting the prompt from the "
                     "left; longer texts score differently here unless you cut them the same way.")
    dtype = spec.get("dtype")
    if dtype and dtype != "float32":
        notes.append(f"- The reward model's backbone ran in {dtype}; this export is float32, so scores can differ "
                     "in the low digits.")
    notes_text = ("\n## Notes\n\n" + "\n".join(notes) + "\n") if notes else ""
    return f"""# paretoalign reward model — sequence classifier export

A frozen `{spec.get('model')}` backbone with a linear reward head: the single logit is

    R_w(x, y) = {terms or '0'}

over the de-correlated objective rewards r' of the paretoalign reward model (weights in `{EXPORT_INFO_FILE}`).
Written by paretoalign {__version__}.

## Scoring with plain transformers

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

path = "."  # this directory
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()

prompt = [{{"role": "user", "content": "How do I boil an egg?"}}]
response = "Cover it with cold water, boil, then simmer for 9 minutes."
{text_line}
batch = tokenizer([text], add_special_tokens=False, padding=True, return_tensors="pt")  # right padding
with torch.no_grad():
    reward = model(**batch).logits[:, 0]
```

The text must be rendered exactly like this (the chat template already holds every special token, hence
`add_special_tokens=False`). The classifier reads the logit at the last non-pad token, which is the last token of
the text — the token whose final hidden state the reward model's features are. Pad on the right (the saved
tokenizer does): with causal attention, padding after a text leaves its logits unchanged.
{notes_text}"""


def export_sequence_classifier(model: RewardModel, weights: Weights, output_dir: str | Path, *,
                               overwrite: bool = False) -> Path:
    """Write a transformers `AutoModelForSequenceClassification` directory scoring R_w = sum_i w_i r'_i.

    Only for causal-LM backbones (InputError otherwise). `weights` as in `RewardModel.score` (required: the
    gated score is not linear). The directory (written atomically) holds the model (safetensors, float32), the
    tokenizer (right padding; pad = eos if it had no pad token), README.md with the exact scoring recipe, and
    paretoalign_export.json with the objectives and weights. `output_dir` must be missing, empty or a previous
    export (else InputError unless `overwrite`; see `paretoalign.output_paths`).
    """
    from paretoalign.output_paths import HF_EXPORT, check_output_dir

    spec = model.backbone_spec
    check_output_dir(output_dir, HF_EXPORT, inputs=[getattr(model.backbone, "model_path", None), spec.get("model")],
                     overwrite=overwrite, field="output_dir")
    if spec.get("kind") != "causal_lm":
        raise InputError(f"only reward models on a causal-LM backbone can be exported as a sequence classifier; "
                         f"this one uses a {spec.get('kind')!r} backbone", field="backbone")
    u = model.linear_score_vector(weights)
    w = model.resolve_weights(weights)
    backbone = model.backbone
    model_path = getattr(backbone, "model_path", None)
    if not model_path:
        raise InputError("the backbone was built from an in-memory model object, so there is no model directory to "
                         "export from", field="backbone")

    from transformers import AutoModelForSequenceClassification

    # The backbone object's setting is its loader's (the user's flag or API argument), never the saved spec's.
    trust_remote_code = getattr(backbone, "trust_remote_code", False) is True
    check_remote_code(model_path, trust_remote_code=trust_remote_code)
    # The load report would call the head "newly initialized, consider training": it is set just below.
    with quiet_transformers():
        classifier = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=1, dtype=torch.float32, use_safetensors=True,
            trust_remote_code=trust_remote_code)
    head = getattr(classifier, "score", None)
    if not isinstance(head, nn.Linear) or tuple(head.weight.shape) != (1, u.shape[0]):
        raise InputError(f"{type(classifier).__name__} has no linear 'score' head of width {u.shape[0]}; this "
                         "architecture cannot be exported", field="backbone")
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(u[None, :].astype(np.float32)))
        if head.bias is not None:
            head.bias.zero_()

    tokenizer = copy.deepcopy(backbone.tokenizer)
    pad_from_eos = tokenizer.pad_token_id is None
    if pad_from_eos:
        if tokenizer.eos_token is None:
            raise InputError("the backbone's tokenizer has neither a pad nor an eos token", field="backbone")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    for config in {id(c): c for c in (classifier.config, classifier.config.get_text_config())}.values():
        config.pad_token_id = tokenizer.pad_token_id
    classifier.config.id2label = {0: "reward"}
    classifier.config.label2id = {"reward": 0}

    weight_map = {name: float(w[i]) for i, name in enumerate(model.objective_names)}
    info = {"format": HF_EXPORT_FORMAT, "format_version": 1, "paretoalign_version": __version__,
            "objectives": list(model.objective_names), "weights": weight_map,
            "score": "logits[:, 0] = sum_i weights[i] * r'_i(x, y) (de-correlated objective rewards)",
            "backbone": spec, "chat_template": has_chat_template(tokenizer),
            "pad_token_id": int(tokenizer.pad_token_id), "pad_token_from_eos": pad_from_eos,
            "padding_side": "right"}
    readme = _readme(weights=weight_map, chat_template=info["chat_template"], pad_from_eos=pad_from_eos, spec=spec)
    target = Path(output_dir)
    with atomic_directory(target) as tmp, no_progress_bars():
        classifier.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return target
