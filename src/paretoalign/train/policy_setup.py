"""Loading a policy for training (full fine-tune or LoRA), its frozen reference, and its effective weights.

Supports:

- any causal LM `load_causal_lm` accepts (alias, local directory, .gguf, hub id) or a model object;
- LoRA adapters through ``peft`` (seeded initialisation); the reference of a LoRA policy is, by default, the same
  network with its adapters switched off, so no second copy is held;
- `effective_weights`: the full-model weights a policy computes with (LoRA deltas merged in), keyed like the plain
  model's parameters, for EMA anchors, task vectors and saving — without touching the trained model.

Assumes dropout is off while training (the model stays in eval mode), as TRL's DPO trainer does by default: samples
and log-probs are then deterministic functions of the weights and the seed.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, TypeGuard

import torch

from paretoalign.embed.models import load_causal_lm
from paretoalign.errors import InputError
from paretoalign.train.training_config import PolicyTrainingConfig

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

    from paretoalign.embed.protocols import CausalLM, Tokenizer

ADAPTER = "default"
PEFT_PREFIX = "base_model.model."


def is_peft_model(model: object) -> TypeGuard[PeftModel]:
    """Whether `model` is a peft-wrapped model."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def training_device(config: PolicyTrainingConfig) -> torch.device:
    """The device to train on: the configured one, else accelerate's for this process (its GPU, else CPU)."""
    if config.device:
        return torch.device(config.device)
    from accelerate import PartialState

    return PartialState().device


def peft_model(model: CausalLM, lora: LoraConfig) -> PeftModel:
    """``peft.get_peft_model(model, lora)`` without its FutureWarning on transformers 5.

    peft 0.21.2 (the newest release) asks ``model.is_gradient_checkpointing``, which transformers 5.23 deprecated for
    ``is_activation_checkpointing``, so every LoRA run (DPO, MODPO, BOND, WARP, GenARM) warned once. Only that one
    message is hidden, only during this call; we never enable checkpointing, so the answer is False either way.
    """
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora)


def wrap_lora(model: CausalLM, config: PolicyTrainingConfig) -> PeftModel:
    """`model` with fresh LoRA adapters (seeded by config.seed); only the adapters train."""
    from peft import LoraConfig

    torch.manual_seed(config.seed)
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=config.lora_target_modules)
    return peft_model(model, lora)


def load_policy_for_training(config: PolicyTrainingConfig, model: CausalLM | None = None,
                             tokenizer: Tokenizer | None = None, *,
                             trainable_modules: Sequence[str] = ()) -> tuple[CausalLM, Tokenizer]:
    """(trainable policy, tokenizer) on the training device, LoRA-wrapped when config.lora, in eval mode.

    `trainable_modules`: names of top-level modules (e.g. a new reward head ``score``) trained in full even with
    LoRA."""
    if model is None:
        model, loaded = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
        tokenizer = tokenizer if tokenizer is not None else loaded
    elif tokenizer is None:
        raise InputError("a model object needs its tokenizer: pass tokenizer=...", field="tokenizer")
    model.to(training_device(config))
    if config.lora:
        model = wrap_lora(model, config)
        for name, p in model.named_parameters():
            if plain_name(name).split(".", 1)[0] in trainable_modules:
                p.requires_grad_(True)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    return model, tokenizer


def load_frozen_model(ref: str, config: PolicyTrainingConfig, field: str) -> CausalLM:
    """A frozen copy of model `ref` on the training device (errors name the config field)."""
    try:
        model, _ = load_causal_lm(ref, trust_remote_code=config.trust_remote_code)
    except InputError as exc:
        raise InputError(f"cannot load the {field} model: {exc}", field=field) from None
    return freeze(model.to(training_device(config)))


def freeze(model: CausalLM) -> CausalLM:
    """`model` in eval mode with every parameter frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def check_same_vocabulary(policy: CausalLM, other: CausalLM, field: str) -> None:
    """Raise InputError unless both models predict over the same vocabulary."""
    a = policy.get_output_embeddings().weight.shape[0]
    b = other.get_output_embeddings().weight.shape[0]
    if a != b:
        raise InputError(f"the {field} model has a vocabulary of {b} tokens, the policy {a}: they must share one "
                         "tokenizer", field=field)


class Reference:
    """The frozen reference policy pi_ref: a separate model, or the LoRA policy with its adapters switched off."""

    def __init__(self, model: CausalLM | None = None, *, adapter_host: PeftModel | None = None) -> None:
        if (model is None) == (adapter_host is None):
            raise ValueError("give exactly one of model / adapter_host")
        self.model = model
        self.adapter_host = adapter_host

    @contextmanager
    def active(self) -> Iterator[CausalLM]:
        """The module to call as the reference, inside a no-grad context."""
        switch = self.adapter_host.disable_adapter() if self.adapter_host is not None else nullcontext()
        with torch.no_grad(), switch:
            yield self.adapter_host if self.adapter_host is not None else self.model


def build_reference(policy: CausalLM, config: PolicyTrainingConfig, initial_model: CausalLM | None = None
                    ) -> Reference:
    """pi_ref for `policy`: config.reference when given, else the initial policy (shared when LoRA)."""
    if config.reference is not None:
        model = load_frozen_model(config.reference, config, "reference")
        check_same_vocabulary(policy, model, "reference")
        return Reference(model)
    if is_peft_model(policy):
        return Reference(adapter_host=policy)
    if initial_model is None:
        raise InputError("full fine-tuning without a reference needs the initial weights: set reference=...",
                         field="reference")
    return Reference(initial_model.to(training_device(config)))


def frozen_copy(model: CausalLM) -> CausalLM:
    """A frozen deep copy of a plain model (for the initial policy as reference, or an anchor)."""
    return freeze(copy.deepcopy(model))


def plain_name(name: str) -> str:
    """A peft parameter/module name without the wrapper prefix."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name


def trained_weight_names(model: CausalLM) -> list[str]:
    """Plain names of the full-model weights training changes (LoRA-adapted weights, or every trainable one)."""
    if not is_peft_model(model):
        return [n for n, p in model.named_parameters() if p.requires_grad]
    from peft.tuners.lora import LoraLayer

    return [f"{plain_name(n)}.weight" for n, m in model.named_modules() if isinstance(m, LoraLayer)]


@torch.no_grad()
def effective_weights(model: CausalLM) -> dict[str, torch.Tensor]:
    """The full weights training changes, LoRA deltas merged in (detached copies), keyed by plain parameter name."""
    if not is_peft_model(model):
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer().weight
            out[f"{plain_name(name)}.weight"] = (base + module.get_delta_weight(ADAPTER).to(base.dtype)).detach()
    return out


@torch.no_grad()
def plain_state(model: CausalLM) -> dict[str, torch.Tensor]:
    """The whole state dict of the plain model a policy computes with (LoRA merged), detached copies."""
    peft = is_peft_model(model)
    base = model.get_base_model() if peft else model
    state = {}
    for name, tensor in base.state_dict().items():
        if peft and ".lora_" in name:
            continue
        # an adapted layer's own tensors (its bias; its weight, replaced below) sit under `base_layer`
        state[name.replace(".base_layer.", ".") if peft else name] = tensor.detach().clone()
    if is_peft_model(model):
        state.update(effective_weights(model))
    return state


def trainable_parameters(model: CausalLM) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimizer updates, by name (LoRA adapters, or every weight)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_plain_weights_(model: CausalLM, weights: dict[str, torch.Tensor]) -> None:
    """Copy `weights` (plain names) into a plain model's parameters in place."""
    params = dict(model.named_parameters())
    for name, tensor in weights.items():
        if name not in params:
            raise InputError(f"weight {name!r} is not a parameter of the model", field="weights")
        params[name].copy_(tensor)


def initial_copy(config: PolicyTrainingConfig, model: CausalLM | None = None) -> CausalLM:
    """A frozen plain copy of the initial policy (call before LoRA wraps a passed-in model)."""
    if model is not None:
        return frozen_copy(model)
    loaded, _ = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
    return freeze(loaded.to(training_device(config)))
