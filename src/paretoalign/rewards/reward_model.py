"""The trained multi-objective reward model: linear heads W, de-correlation T, gating g(x), scale s.

    r(x, y)  = W h(x, y)                      raw per-objective rewards      (k,)
    r'(x, y) = T r(x, y)                      verbosity de-correlated         (k,)
    R(x, y)  = s * sum_i g_i(x) r'_i(x, y)    with the gating network
    R_w(x, y) = sum_i w_i r'_i(x, y)          with user weights w (Directional Preference Alignment: no s, no gating)

Where length decided: `RewardOutput.verbosity_contribution` is the verbosity objective's term of R, s * g_v(x) r'_v
(or w_v r'_v with user weights), v being `RewardModel.verbosity_objective`.

Scoring math runs in float64 numpy on the float32 parameters and features; every output row depends on its own
input row only, bit for bit (see `rowwise_matmul`), so a response scores the same in any batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paretoalign import __version__
from paretoalign.atomic_io import atomic_directory
from paretoalign.data.schema import Message
from paretoalign.embed.backbone import Backbone, Features
from paretoalign.errors import InputError, ModelFormatError
from paretoalign.output_paths import RM_CONFIG_FILE as CONFIG_FILE
from paretoalign.output_paths import RM_FORMAT as FORMAT
from paretoalign.rewards.gating import GatingNetwork, row_sum, rowwise_matmul

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
OBJECTIVE_KINDS = ("ridge", "bradley_terry", "length")

Weights = Mapping[str, float] | Sequence[float] | np.ndarray | None


@dataclass
class RewardOutput:
    """Scores of n rows (float64 arrays)."""

    score: np.ndarray
    """(n,) the final reward: s * sum_i g_i(x) r'_i, or sum_i w_i r'_i with user weights."""
    objectives: np.ndarray
    """(n, k) the de-correlated per-objective rewards r' = T r that the score combines."""
    objectives_raw: np.ndarray
    """(n, k) the raw head outputs r = W h(x, y)."""
    gating: np.ndarray
    """(n, k) the weights actually used: g(x) from the gating network, or the user's weights on every row."""
    baseline: np.ndarray | None
    """(n,) the pooled Bradley-Terry baseline head's score; None for models without one (a sequence classifier)."""
    objective_names: list[str]
    verbosity_contribution: np.ndarray | None = None
    """(n,) the verbosity objective's term of `score`: s * g_v(x) r'_v with the gating, w_v r'_v with user weights;
    None for models without a verbosity (length) objective, such as a plain sequence classifier."""

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row: {"score", "objectives": {name: r'_i}, "gating": {name: weight}, "verbosity_contribution"}.

        "verbosity_contribution" is None when the model has no verbosity objective.
        """
        names = self.objective_names
        verbosity = self.verbosity_contribution
        return [{"score": float(self.score[j]),
                 "objectives": {name: float(self.objectives[j, i]) for i, name in enumerate(names)},
                 "gating": {name: float(self.gating[j, i]) for i, name in enumerate(names)},
                 "verbosity_contribution": None if verbosity is None else float(verbosity[j])}
                for j in range(len(self))]

    def take(self, index: Sequence[int] | np.ndarray) -> RewardOutput:
        """The rows at `index`, in that order (copies)."""
        idx = np.asarray(index, dtype=np.intp).reshape(-1)
        return RewardOutput(score=self.score[idx].copy(), objectives=self.objectives[idx].copy(),
                            objectives_raw=self.objectives_raw[idx].copy(), gating=self.gating[idx].copy(),
                            baseline=None if self.baseline is None else self.baseline[idx].copy(),
                            objective_names=list(self.objective_names),
                            verbosity_contribution=None if self.verbosity_contribution is None
                            else self.verbosity_contribution[idx].copy())

    def reweighted(self, w: np.ndarray, verbosity_objective: str | None) -> RewardOutput:
        """What the model's `score(same rows, weights=w)` returns, bit for bit, given its `score(rows)` output.

        `w` is the (k,) vector of `resolve_weights`; objectives, raw objectives and baseline do not depend on the
        weights, so only the score (sum_i w_i r'_i), the gating (w on every row) and the verbosity term (w_v r'_v,
        when `verbosity_objective` names one) are recomputed, with the same operations as the model's own scoring.
        """
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (len(self.objective_names),):
            raise ValueError(f"w must have shape ({len(self.objective_names)},), got {w.shape}")
        gating = np.broadcast_to(w, self.objectives.shape).copy()
        verbosity = None
        if verbosity_objective is not None:
            v = self.objective_names.index(verbosity_objective)
            verbosity = 1.0 * (gating[:, v] * self.objectives[:, v])  # the model's `scale * (...)` with scale 1.0
        return RewardOutput(score=row_sum(self.objectives * w), objectives=self.objectives.copy(),
                            objectives_raw=self.objectives_raw.copy(), gating=gating,
                            baseline=None if self.baseline is None else self.baseline.copy(),
                            objective_names=list(self.objective_names), verbosity_contribution=verbosity)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


def as_prompt(prompt: Any, index: int) -> list[Message]:
    """A prompt (a string or a list of {"role", "content"} messages) as messages; InputError naming row `index`."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) and isinstance(m.get("role"), str)
                                            and isinstance(m.get("content"), str) for m in prompt):
        return [dict(m) for m in prompt]
    raise InputError(f"row {index}: a prompt is a string or a list of {{'role', 'content'}} messages, "
                     f"got {type(prompt).__name__}", field="prompts")


def check_score_inputs(prompts: Any, responses: Any) -> list[list[Message]]:
    """The prompts of `score`'s rows as message lists, after checking both sequences (InputError naming the row)."""
    if isinstance(prompts, str) or isinstance(responses, str):
        raise InputError("prompts and responses must be sequences (one entry per row), not single strings",
                         field="prompts" if isinstance(prompts, str) else "responses")
    if len(prompts) != len(responses):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses: give one prompt per response",
                         field="responses")
    for i, r in enumerate(responses):
        if not isinstance(r, str):
            raise InputError(f"row {i}: a response is a string, got {type(r).__name__}", field="responses")
    return [as_prompt(p, i) for i, p in enumerate(prompts)]


def resolve_weight_vector(weights: Weights, names: Sequence[str], *, field: str = "weights",
                          path: str | None = None) -> np.ndarray | None:
    """User weights as a (k,) float64 vector in the order of `names`; None stays None (the model's own combination).

    A dict names objectives (the others get 0); a sequence gives one weight per objective in order. Unknown
    names, a wrong length, non-finite values and all-zero weights raise InputError(field=field, path=path).
    """
    if weights is None:
        return None
    names = list(names)
    if isinstance(weights, Mapping):
        unknown = [str(key) for key in weights if key not in names]
        if unknown:
            raise InputError(f"unknown objective(s) {', '.join(map(repr, unknown))}; this model's objectives "
                             f"are {', '.join(names)}", path=path, field=field)
        try:
            vec = np.array([float(weights.get(n, 0.0)) for n in names], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"weights must be numbers: {exc}", path=path, field=field) from exc
    elif isinstance(weights, (str, bytes)):
        raise InputError("weights must be a {objective: weight} dict or a sequence of numbers, not a string",
                         path=path, field=field)
    else:
        try:
            vec = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"weights must be numbers: {exc}", path=path, field=field) from exc
        if vec.shape != (len(names),):
            raise InputError(f"a weight vector needs {len(names)} values (one per objective: "
                             f"{', '.join(names)}), got shape {vec.shape}", path=path, field=field)
    if not np.all(np.isfinite(vec)):
        raise InputError("weights must be finite numbers", path=path, field=field)
    if not np.any(vec):
        raise InputError("all weights are zero: name at least one objective with a non-zero weight",
                         path=path, field=field)
    return vec


class RewardModel:
    """An interpretable multi-objective reward model on a frozen embedding backbone."""

    def __init__(self, objective_names: Sequence[str], objective_kinds: Mapping[str, str], W: np.ndarray,
                 T: np.ndarray, gating: GatingNetwork, baseline_w: np.ndarray, backbone_spec: dict[str, Any],
                 metadata: dict[str, Any] | None = None, backbone: Backbone | None = None) -> None:
        names = [str(n) for n in objective_names]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"objective names must be non-empty and unique, got {names}")
        kinds = dict(objective_kinds)
        if set(kinds) != set(names) or any(v not in OBJECTIVE_KINDS for v in kinds.values()):
            raise ValueError(f"objective_kinds must map each of {names} to one of {OBJECTIVE_KINDS}, got {kinds}")
        k = len(names)
        W = np.asarray(W, dtype=np.float32)
        T = np.asarray(T, dtype=np.float32)
        baseline_w = np.asarray(baseline_w, dtype=np.float32)
        if W.ndim != 2 or W.shape[0] != k:
            raise ValueError(f"W must be ({k}, d), got {W.shape}")
        if T.shape != (k, k):
            raise ValueError(f"T must be ({k}, {k}), got {T.shape}")
        if baseline_w.shape != (W.shape[1],):
            raise ValueError(f"baseline_w must be ({W.shape[1]},), got {baseline_w.shape}")
        if gating.n_objectives != k:
            raise ValueError(f"the gating network has {gating.n_objectives} outputs for {k} objectives")
        for name, arr in (("W", W), ("T", T), ("baseline_w", baseline_w)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite values")
        self.objective_names = names
        self.objective_kinds = {n: kinds[n] for n in names}
        self.W = W
        self.T = T
        self.gating = gating.eval()
        self.baseline_w = baseline_w
        self.backbone_spec = dict(backbone_spec)
        self.metadata = dict(metadata or {})
        self._backbone = backbone
        self.trust_remote_code = False
        """Whether the backbone loaded from `backbone_spec` may run its model folder's own code: the caller's choice
        (`from_pretrained`'s argument), never a setting read from a saved model."""

    def __repr__(self) -> str:
        return (f"RewardModel(objectives={self.objective_names}, feature_dim={self.feature_dim}, "
                f"backbone={self.backbone_spec.get('kind')}:{self.backbone_spec.get('model')})")

    # ------------------------------------------------------------------ properties

    @property
    def n_objectives(self) -> int:
        return len(self.objective_names)

    @property
    def feature_dim(self) -> int:
        return int(self.W.shape[1])

    @property
    def prompt_feature_dim(self) -> int:
        return int(self.gating.prompt_dim)

    @property
    def scale(self) -> float:
        """The learned scale s of the gated score."""
        return float(self.gating.scale.detach())

    @property
    def verbosity_objective(self) -> str | None:
        """The length-derived objective: the training config's `verbosity_objective` (default "verbosity") when the
        model has it, else its one objective of kind "length"; None when it has neither."""
        config = self.metadata.get("config")
        name = config.get("verbosity_objective", "verbosity") if isinstance(config, dict) else "verbosity"
        if name in self.objective_names:
            return str(name)
        lengths = [n for n in self.objective_names if self.objective_kinds.get(n) == "length"]
        return lengths[0] if len(lengths) == 1 else None

    @property
    def backbone(self) -> Backbone:
        """The embedding backbone, loaded from `backbone_spec` on first use."""
        if self._backbone is None:
            from paretoalign.embed.registry import load_backbone

            self._backbone = load_backbone(self.backbone_spec, trust_remote_code=self.trust_remote_code is True)
        return self._backbone

    @backbone.setter
    def backbone(self, value: Backbone | None) -> None:
        self._backbone = value

    # ------------------------------------------------------------------ weights

    def resolve_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights as a (k,) float64 vector in objective order; None means "use the gating network".

        A dict names objectives (the others get 0); a sequence gives one weight per objective in order. Unknown
        names, a wrong length, non-finite values and all-zero weights raise InputError(field="weights").
        """
        return resolve_weight_vector(weights, self.objective_names)

    def linear_score_vector(self, weights: Weights) -> np.ndarray:
        """u (d,) float64 with u . h(x, y) == score(x, y) under fixed user `weights`: u = w^T T W."""
        w = self.resolve_weights(weights)
        if w is None:
            raise InputError("the gated score depends on the prompt, so it has no single linear form: give weights",
                             field="weights")
        return (w @ self.T.astype(np.float64)) @ self.W.astype(np.float64)

    # ------------------------------------------------------------------ scoring

    def score_features(self, features: Features, weights: Weights = None) -> RewardOutput:
        """Score precomputed features (pure math; float64; each row independent of the batch it is in)."""
        w = self.resolve_weights(weights)
        H = np.asarray(features.response)
        P = np.asarray(features.prompt)
        if H.ndim != 2 or H.shape[1] != self.feature_dim:
            raise InputError(f"response features must be (n, {self.feature_dim}), got {H.shape}", field="features")
        if P.ndim != 2 or P.shape != (H.shape[0], self.prompt_feature_dim):
            raise InputError(f"prompt features must be ({H.shape[0]}, {self.prompt_feature_dim}), got {P.shape}",
                             field="features")
        raw = rowwise_matmul(H, self.W.T)
        objectives = rowwise_matmul(raw, self.T.T)
        baseline = rowwise_matmul(H, self.baseline_w[:, None])[:, 0]
        scale = 1.0
        if w is None:
            gating = self.gating.weights_numpy(P)
            scale = self.scale
            score = scale * row_sum(gating * objectives)
        else:
            gating = np.broadcast_to(w, objectives.shape).copy()
            score = row_sum(objectives * w)
        verbosity = None
        if self.verbosity_objective is not None:
            v = self.objective_names.index(self.verbosity_objective)
            verbosity = scale * (gating[:, v] * objectives[:, v])
        return RewardOutput(score=score, objectives=objectives, objectives_raw=raw, gating=gating,
                            baseline=baseline, objective_names=list(self.objective_names),
                            verbosity_contribution=verbosity)

    def score(self, prompts: Sequence[str | list[Message]], responses: Sequence[str], *, weights: Weights = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        """Embed (prompt, response) rows with the backbone and score them.

        A prompt is a string (one user message) or a list of {"role", "content"} messages. `weights`: None uses
        the gating network; a {objective: weight} dict or a length-k sequence gives R = sum_i w_i r'_i.
        """
        conversations = check_score_inputs(prompts, responses)
        self.resolve_weights(weights)  # fail before the (slow) embedding
        features = self.backbone.embed(conversations, list(responses), batch_size=batch_size, progress=progress)
        return self.score_features(features, weights)

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        """The config.json content of `save_pretrained`."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "paretoalign_version": __version__,
                "objective_names": list(self.objective_names), "objective_kinds": dict(self.objective_kinds),
                "feature_dim": self.feature_dim, "prompt_feature_dim": self.prompt_feature_dim,
                "gating": self.gating.config(), "backbone": self.backbone_spec, "metadata": self.metadata}

    def save_pretrained(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write config.json and model.safetensors to `directory`, atomically.

        A previous reward model there is replaced; a folder holding anything else is refused (InputError) unless
        `overwrite` (see `paretoalign.output_paths.check_output_dir`).
        """
        from safetensors.torch import save_file

        from paretoalign.output_paths import REWARD_MODEL, check_output_dir

        check_output_dir(directory, REWARD_MODEL, overwrite=overwrite, field="directory")
        text = json.dumps(self.config(), indent=2, ensure_ascii=False, default=_json_default) + "\n"
        tensors = {"W": torch.from_numpy(self.W.copy()), "T": torch.from_numpy(self.T.copy()),
                   "baseline_w": torch.from_numpy(self.baseline_w.copy())}
        for key, value in self.gating.state_dict().items():
            tensors[f"gating.{key}"] = value.detach().cpu().contiguous().clone()
        target = Path(directory)
        with atomic_directory(target) as tmp:
            (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT,
                                                                  "format_version": str(FORMAT_VERSION)})
        return target

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, backbone: Backbone | None = None,
                        trust_remote_code: bool = False) -> RewardModel:
        """Load a model saved by `save_pretrained` (safetensors only). `backbone` replaces the saved spec's one.

        `trust_remote_code` (the caller's choice; a value stored in config.json is ignored) lets the backbone's model
        folder run its own Python code. Without it, a backbone folder that asks for that is refused right here,
        before any work (`paretoalign.embed.models.check_remote_code`).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        root = Path(directory)
        config_path = root / CONFIG_FILE
        weights_path = root / WEIGHTS_FILE
        if not root.is_dir():
            raise ModelFormatError(f"{root}: no such reward model directory")
        if not config_path.is_file():
            raise ModelFormatError(f"{config_path} is missing: {root} is not a paretoalign reward model directory")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{config_path}: not readable JSON ({exc})") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            found = config.get("format") if isinstance(config, dict) else None
            raise ModelFormatError(f"{config_path}: format {found!r} is not {FORMAT!r}; this is not a paretoalign "
                                   "reward model")
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFormatError(
                f"{config_path}: written in format_version {version!r} by paretoalign "
                f"{config.get('paretoalign_version', 'unknown')}; this paretoalign {__version__} reads "
                f"format_version {FORMAT_VERSION}")
        missing = [key for key in ("objective_names", "objective_kinds", "feature_dim", "prompt_feature_dim",
                                   "gating", "backbone") if key not in config]
        if missing:
            raise ModelFormatError(f"{config_path}: missing keys {missing}")
        if not weights_path.is_file():
            raise ModelFormatError(f"{weights_path} is missing (the model's weights)")
        try:
            tensors = load_file(str(weights_path))
        except (OSError, SafetensorError) as exc:
            raise ModelFormatError(f"{weights_path}: not a readable safetensors file ({exc})") from exc

        names = list(config["objective_names"])
        k, d, dp = len(names), int(config["feature_dim"]), int(config["prompt_feature_dim"])
        expected = {"W": (k, d), "T": (k, k), "baseline_w": (d,)}
        gating_cfg = dict(config["gating"])
        try:
            gating = GatingNetwork(dp, k, hidden=gating_cfg.get("hidden", ()),
                                   dropout=gating_cfg.get("dropout", 0.0),
                                   temperature=gating_cfg.get("temperature", 1.0),
                                   conditioned=gating_cfg.get("conditioned", True) is not False)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{config_path}: bad gating settings {gating_cfg} ({exc})") from exc
        expected.update({f"gating.{key}": tuple(v.shape) for key, v in gating.state_dict().items()})
        absent = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if absent or extra:
            raise ModelFormatError(f"{weights_path}: tensors do not match {config_path} "
                                   f"(missing {absent}, unexpected {extra})")
        for key, shape in expected.items():
            if tuple(tensors[key].shape) != shape:
                raise ModelFormatError(f"{weights_path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                                       f"expected {shape} from {config_path}")
        gating.load_state_dict({key.removeprefix("gating."): tensors[key].float()
                                for key in expected if key.startswith("gating.")})
        if backbone is not None and (backbone.feature_dim != d or backbone.prompt_feature_dim != dp):
            raise InputError(f"the backbone gives features of size ({backbone.feature_dim}, "
                             f"{backbone.prompt_feature_dim}) but the model in {root} expects ({d}, {dp})",
                             field="backbone")
        spec = config["backbone"]
        if not isinstance(spec, dict):
            raise ModelFormatError(f"{config_path}: 'backbone' must be an object (the backbone spec), got {spec!r}")
        spec = {key: value for key, value in spec.items() if key != "trust_remote_code"}  # never honoured
        try:
            model = cls(objective_names=names, objective_kinds=config["objective_kinds"],
                        W=tensors["W"].float().numpy(), T=tensors["T"].float().numpy(), gating=gating,
                        baseline_w=tensors["baseline_w"].float().numpy(), backbone_spec=spec,
                        metadata=config.get("metadata") or {}, backbone=backbone)
        except ValueError as exc:
            raise ModelFormatError(f"{root}: inconsistent model ({exc})") from exc
        model.trust_remote_code = trust_remote_code is True
        source = spec.get("model")
        if backbone is None and isinstance(source, str) and Path(source).expanduser().is_dir():
            from paretoalign.embed.models import check_remote_code

            check_remote_code(Path(source).expanduser(), trust_remote_code=model.trust_remote_code,
                              context=f"the backbone of the reward model in {root}")
        return model

