"""Stage 2 of ArmoRM: a prompt-conditioned gating network over the de-correlated objective rewards.

g(x) = softmax(MLP(h(x)) / tau) on the simplex, R(x, y) = s * sum_i g_i(x) r'_i(x, y) with a learnable scalar scale s.
Three ways to fit it (`GATING_METHODS`):

- ``"bt"`` (ArmoRM): the MLP and s train with the Bradley-Terry loss -log sigma(R(x, y_w) - R(x, y_l)) on pairs;
- ``"pro"`` (Preference Orchestrator, ALGORITHMS.md section 11): g(x) regresses (cross-entropy) onto the normalised
  objective rewards of the preferred reply, t(x) = softmax(r'(x, y_w)), then s alone is fitted with the BT loss;
- ``"pro_margin"``: the same with the target softmax(r'(x, y_w) - r'(x, y_l)): the objectives that explain the
  preference rather than those the preferred reply scores high on;
- ``"none"``: no prompt conditioning; one weight vector on the simplex (and s) trained with the BT loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

BLOCK_ROWS = 64
"""Rows per matrix product in `rowwise_matmul`."""
GATING_METHODS = ("bt", "pro", "pro_margin", "none")
"""How the gating is fitted (see the module docstring)."""
SMALL_STEP_MACS = 1 << 28
"""Below this many multiply-adds in a training step's forward pass (the default 256-256 MLP on 576-768-dim prompts
with batch 512: about 1.3e8), gating trains on one thread (see train_gating)."""


def rowwise_matmul(X: np.ndarray, M: np.ndarray) -> np.ndarray:
    """X @ M in float64, where each output row depends only on its input row, bit for bit.

    BLAS picks different kernels and summation orders for different numbers of rows, so a row's product can change
    in its last bits with the batch it comes in. Multiplying fixed-size, zero-padded blocks of `BLOCK_ROWS` rows
    keeps every call the same shape, making scores independent of batch composition.
    """
    X = np.asarray(X, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    n = X.shape[0]
    out = np.empty((n, M.shape[1]), dtype=np.float64)
    block = np.zeros((BLOCK_ROWS, X.shape[1]), dtype=np.float64)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        block[: stop - start] = X[start:stop]
        block[stop - start:] = 0.0
        out[start:stop] = (block @ M)[: stop - start]
    return out


def row_sum(A: np.ndarray) -> np.ndarray:
    """Sum over the last axis of a 2-D array, column by column (the same order for every row and batch size)."""
    acc = np.zeros(A.shape[0], dtype=np.float64)
    for j in range(A.shape[1]):
        acc += A[:, j]
    return acc


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, batch-composition independent."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / row_sum(z)[:, None]


class GatingNetwork(nn.Module):
    """g(x) = softmax(MLP(h(x)) / temperature); `scale` is the learnable s of R = s * sum_i g_i r'_i."""

    def __init__(self, prompt_dim: int, n_objectives: int, hidden: Sequence[int] = (64,),
                 dropout: float = 0.2, temperature: float = 10.0, conditioned: bool = True) -> None:
        super().__init__()
        if prompt_dim < 1 or n_objectives < 1:
            raise ValueError(f"prompt_dim and n_objectives must be positive, got {prompt_dim}, {n_objectives}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.prompt_dim = int(prompt_dim)
        self.n_objectives = int(n_objectives)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.temperature = float(temperature)
        self.conditioned = bool(conditioned)
        layers: list[nn.Module] = []
        width = self.prompt_dim
        if not self.conditioned:  # one weight vector for every prompt: only the output bias is a parameter
            self.hidden = ()
            self.logits = nn.Parameter(torch.zeros(self.n_objectives))
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout)]
            width = h
        if self.conditioned:
            layers.append(nn.Linear(width, self.n_objectives))
        self.mlp = nn.Sequential(*layers)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def config(self) -> dict[str, Any]:
        """The constructor settings besides the dimensions (saved in a model's config.json)."""
        out: dict[str, Any] = {"hidden": list(self.hidden), "dropout": self.dropout, "temperature": self.temperature}
        if not self.conditioned:
            out["conditioned"] = False
        return out

    def logits_of(self, h_x: torch.Tensor) -> torch.Tensor:
        """The pre-softmax gating logits, (n, k)."""
        if not self.conditioned:
            return self.logits.expand(h_x.shape[0], -1)
        return self.mlp(h_x)

    def forward(self, h_x: torch.Tensor) -> torch.Tensor:
        """Gating weights g(x), (n, k), each row on the simplex."""
        return torch.softmax(self.logits_of(h_x) / self.temperature, dim=-1)

    def reward(self, h_x: torch.Tensor, r_prime: torch.Tensor) -> torch.Tensor:
        """R = s * sum_i g_i(x) r'_i, (n,)."""
        return self.scale * (self(h_x) * r_prime).sum(dim=-1)

    def weights_numpy(self, h_x: np.ndarray) -> np.ndarray:
        """g(x) in float64 numpy, evaluation mode (no dropout), each row independent of the others bit for bit."""
        x = np.asarray(h_x, dtype=np.float64)
        if not self.conditioned:
            logits = self.logits.detach().cpu().double().numpy()
            return softmax_rows(np.broadcast_to(logits, (x.shape[0], self.n_objectives)) / self.temperature)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                W = layer.weight.detach().cpu().double().numpy()
                x = rowwise_matmul(x, W.T) + layer.bias.detach().cpu().double().numpy()
            elif isinstance(layer, nn.ReLU):
                x = np.maximum(x, 0.0)
        return softmax_rows(x / self.temperature)


@dataclass
class GatingFit:
    """A trained gating network (in eval mode) and its training curve."""

    network: GatingNetwork
    history: dict[str, Any] = field(default_factory=dict)
    """Lists "step", "train_loss" (mean batch loss since the previous entry), "val_loss", "val_accuracy"; scalars
    "initial_train_loss", "final_train_loss" (eval mode, whole training split), "initial_val_loss",
    "final_val_loss", "final_val_accuracy" (NaN without a validation split), "scale", "n_train", "n_val", "steps",
    "seconds"."""


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bt_loss(net: GatingNetwork, h: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor) -> torch.Tensor:
    g = net(h)
    margin = net.scale * ((g * (rw - rl)).sum(dim=-1))
    return nn.functional.softplus(-margin).mean()


def _cross_entropy_to(net: GatingNetwork, h: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of g(x) to softmax(target_logits)."""
    target = torch.softmax(target_logits, dim=-1)
    log_g = torch.log_softmax(net.logits_of(h) / net.temperature, dim=-1)
    return -(target * log_g).sum(dim=-1).mean()


def _pro_loss(net: GatingNetwork, h: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor) -> torch.Tensor:
    return _cross_entropy_to(net, h, rw)


def _pro_margin_loss(net: GatingNetwork, h: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor) -> torch.Tensor:
    return _cross_entropy_to(net, h, rw - rl)


@torch.no_grad()
def _fit_scale(net: GatingNetwork, h: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor, steps: int = 50) -> None:
    """Newton's method on the 1-D BT loss of s, the gating held fixed (PRO fits g without the pairs' order)."""
    net.eval()
    m = ((net(h) * (rw - rl)).sum(dim=-1)).double()
    s = torch.tensor(1.0, dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(-s * m)
        grad = -(m * p).mean()
        hess = (m * m * p * (1 - p)).mean() + 1e-9
        step = grad / hess
        s = torch.clamp(s - step, min=0.0, max=1e3)
        if abs(float(step)) < 1e-10:
            break
    net.scale.copy_(s.float())


@torch.no_grad()
def _evaluate(net: GatingNetwork, h: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor,
              loss_fn=None) -> tuple[float, float]:
    """(loss, BT accuracy); the loss is `loss_fn`'s (default: the BT loss)."""
    if h.shape[0] == 0:
        return math.nan, math.nan
    net.eval()
    g = net(h)
    margin = net.scale * ((g * (rw - rl)).sum(dim=-1))
    loss = (loss_fn or _bt_loss)(net, h, rw, rl).item()
    acc = ((margin > 0).double() + 0.5 * (margin == 0).double()).mean().item()
    return loss, acc


def train_gating(h_x_pairs: np.ndarray, r_w: np.ndarray, r_l: np.ndarray, *, hidden: Sequence[int] = (64,),
                 dropout: float = 0.2, temperature: float = 10.0, steps: int = 1000, batch_size: int = 512,
                 lr: float = 1e-3, weight_decay: float = 0.0, val_fraction: float = 0.1, seed: int = 0,
                 progress: bool = False, num_threads: int | None = None, restore_best: bool = True,
                 eval_every: int | None = None, method: str = "bt") -> GatingFit:
    """Train g and s on preference pairs with the Bradley-Terry loss.

    h_x_pairs: (n, dp) prompt features h(x) of each pair; r_w, r_l: (n, k) DE-CORRELATED objective rewards r' = T r
    of the chosen and rejected responses. A seeded `val_fraction` of the pairs (at least one when > 0) is held out
    for the curve; the network trains on the rest for `steps` AdamW steps (weight decay `weight_decay`, 0 by
    default, applied to every parameter) on minibatches drawn without replacement, epoch by epoch. Fully
    deterministic given `seed` (its own torch.Generator and a forked global RNG for the initialisation and dropout;
    the caller's RNG state is left untouched). The returned network is in eval() mode.

    `restore_best`: with a validation split, return the network of the evaluation point (every `eval_every` steps,
    default steps // 20) with the lowest validation loss (early stopping; "best_step" in the history); a small
    preference set overfits a wide MLP long before the paper's 2000 steps.

    `method`: one of GATING_METHODS (see the module docstring); with "pro" / "pro_margin" the curve and early
    stopping follow the cross-entropy to the targets, and s is fitted last.

    `num_threads`: torch intra-op threads while training (restored afterwards). None: one thread when a step's
    forward pass is smaller than SMALL_STEP_MACS multiply-adds, else torch's current setting. Steps that small gain
    little from threads, and on a busy machine spinning worker threads made them 20x slower (33 ms vs 770 ms per
    default step on 2 shared cores).
    """
    h = torch.as_tensor(np.asarray(h_x_pairs, dtype=np.float32))
    rw = torch.as_tensor(np.asarray(r_w, dtype=np.float32))
    rl = torch.as_tensor(np.asarray(r_l, dtype=np.float32))
    if h.ndim != 2 or rw.ndim != 2 or rw.shape != rl.shape or h.shape[0] != rw.shape[0]:
        raise ValueError(f"h_x_pairs must be (n, dp) and r_w, r_l (n, k); got {tuple(h.shape)}, "
                         f"{tuple(rw.shape)}, {tuple(rl.shape)}")
    n = h.shape[0]
    if n < 1:
        raise ValueError("train_gating needs at least one preference pair")
    if not (torch.isfinite(h).all() and torch.isfinite(rw).all() and torch.isfinite(rl).all()):
        raise ValueError("gating inputs contain NaN or infinite values")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if method not in GATING_METHODS:
        raise ValueError(f"gating method must be one of {GATING_METHODS}, got {method!r}")
    train_loss = {"pro": _pro_loss, "pro_margin": _pro_margin_loss}.get(method, _bt_loss)
    pro = method in ("pro", "pro_margin")

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_val = min(max(1, round(val_fraction * n)), n - 1) if val_fraction > 0 and n > 1 else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    h_tr, rw_tr, rl_tr = h[train_idx], rw[train_idx], rl[train_idx]
    h_va, rw_va, rl_va = h[val_idx], rw[val_idx], rl[val_idx]
    n_train = h_tr.shape[0]
    bs = min(batch_size, n_train)
    eval_every = max(1, eval_every or steps // 20)
    widths = [h.shape[1], *hidden, rw.shape[1]]
    step_macs = bs * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    if num_threads is None:
        num_threads = 1 if step_macs < SMALL_STEP_MACS else torch.get_num_threads()

    with _torch_threads(num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = GatingNetwork(h_tr.shape[1], rw_tr.shape[1], hidden=hidden, dropout=dropout, temperature=temperature,
                            conditioned=method != "none")
        params = [q for name, q in net.named_parameters() if not pro or name != "scale"]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        init_train, _ = _evaluate(net, h_tr, rw_tr, rl_tr, train_loss)
        init_val, init_acc = _evaluate(net, h_va, rw_va, rl_va, train_loss)
        history: dict[str, Any] = {"step": [0], "train_loss": [init_train], "val_loss": [init_val],
                                   "val_accuracy": [init_acc]}
        keep_best = restore_best and n_val > 0
        best_loss, best_step = init_val, 0
        best_state = {k: v.clone() for k, v in net.state_dict().items()} if keep_best else None
        order = torch.randperm(n_train, generator=gen)
        pos, running, count = 0, 0.0, 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="gating", unit="step")
        for step in range(1, steps + 1):
            if pos + bs > n_train:
                order = torch.randperm(n_train, generator=gen)
                pos = 0
            idx = order[pos:pos + bs]
            pos += bs
            net.train()
            loss = train_loss(net, h_tr[idx], rw_tr[idx], rl_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            count += 1
            if step % eval_every == 0 or step == steps:
                val_loss, val_acc = _evaluate(net, h_va, rw_va, rl_va, train_loss)
                history["step"].append(step)
                history["train_loss"].append(running / count)
                history["val_loss"].append(val_loss)
                history["val_accuracy"].append(val_acc)
                running, count = 0.0, 0
                if keep_best and val_loss < best_loss:
                    best_loss, best_step = val_loss, step
                    best_state = {k: v.clone() for k, v in net.state_dict().items()}
                if bar is not None:
                    bar.set_postfix(loss=f"{history['train_loss'][-1]:.4f}", val=f"{val_loss:.4f}")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
        if pro:
            _fit_scale(net, h_tr, rw_tr, rl_tr)
        net.eval()
        final_train, _ = _evaluate(net, h_tr, rw_tr, rl_tr, train_loss)
        final_val, final_acc = _evaluate(net, h_va, rw_va, rl_va, train_loss)
    history.update({"initial_train_loss": init_train, "final_train_loss": final_train,
                    "initial_val_loss": init_val, "final_val_loss": final_val, "final_val_accuracy": final_acc,
                    "scale": float(net.scale.detach()), "n_train": int(n_train), "n_val": int(n_val),
                    "steps": int(steps), "best_step": int(best_step if keep_best else steps), "method": method,
                    "seconds": time.perf_counter() - t0})
    return GatingFit(network=net, history=history)
