"""The trade-off report: Pareto fronts of evaluated policies as PNG plots, a JSON table and one HTML page.

Supports:
- ``reward_vs_kl.png``: x = KL to the reference, y = mean weighted reward; Best-of-N points (open markers: their KL
  is the analytic bound) joined by a dashed line from the reference and labelled N=…, policies as labelled dots with
  standard-error bars, the reference at KL 0; non-dominated points ringed and the front drawn as a step line
  (axes: reward maximised, KL minimised; a Best-of-N point takes part at its bound);
- ``objective_<a>_vs_<b>.png`` for each pair of the plotted objectives (default: the 3 with the largest spread across
  points), every objective maximised (the RM's convention: a higher reward is better);
- ``front.json``: every point with an ``on_front`` flag per plotted front, the fronts and the run's meta;
- ``index.html``: one self-contained page (PNGs as base64 data URIs, a plain table, how KL and reward were estimated);
- the answered share beside every point (tables: the "answered" column; plots: "N=4, 75% answered"): a Best-of-N
  point picks like `paretoalign bon`, among finished draws only, so it has no response for a prompt where none of
  its draws finished; its reward is the mean over the answered prompts. A point without any answered prompt has no
  reward (null) and takes part in no front.

Everything is rendered in memory first, then the folder is written atomically, so bad input writes nothing. Plots use
matplotlib's Agg canvas directly (no pyplot, no global backend change). Point names must be unique.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from paretoalign.atomic_io import atomic_directory, write_json_atomic, write_text_atomic
from paretoalign.errors import InputError
from paretoalign.eval.pareto import pareto_front
from paretoalign.eval.policy_eval import FrontPoint, json_safe, paired_gain

REWARD_KL = "reward_vs_kl"
DEFAULT_TITLE = "Reward–KL trade-off"
DEFAULT_NUM_OBJECTIVES = 3
KIND_STYLE = {"reference": {"marker": "s", "color": "black"}, "best_of_n": {"marker": "o", "color": "tab:orange"},
              "policy": {"marker": "o", "color": "tab:blue"}, "deal": {"marker": "D", "color": "tab:purple"}}


# ---------------------------------------------------------------- fronts

def objective_names(points: Sequence[FrontPoint]) -> list[str]:
    """Objectives every point has, in the first point's order."""
    if not points:
        return []
    return [k for k in points[0].objectives if all(k in p.objectives for p in points)]


def choose_objectives(points: Sequence[FrontPoint], objectives_to_plot: Sequence[str] | None = None,
                      count: int = DEFAULT_NUM_OBJECTIVES) -> list[str]:
    """The objectives to plot pairwise: the given ones (checked), else the `count` with the largest spread."""
    names = objective_names(points)
    if objectives_to_plot is not None:
        chosen = list(dict.fromkeys(objectives_to_plot))
        unknown = [k for k in chosen if k not in names]
        if unknown:
            raise InputError(f"unknown objective(s) {unknown}; the points have {names}", field="objectives")
        if len(chosen) < 2:
            raise InputError(f"name at least two objectives to plot against each other, got {chosen}",
                             field="objectives")
        return chosen
    spread = {k: float(np.nanmax(v) - np.nanmin(v)) if not np.isnan(v).all() else 0.0
              for k in names for v in [np.array([p.objectives[k] for p in points], dtype=np.float64)]}
    top = sorted(names, key=lambda k: -spread[k])[:count]  # stable: ties keep the RM's order
    return [k for k in names if k in top]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "objective"


def _front_mask(values: list[list[float]], maximize: list[bool]) -> np.ndarray:
    """`pareto_front` over the points with a value on every axis; a point without one (NaN) is never on it."""
    arr = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(arr).any(axis=1)
    mask = np.zeros(len(values), dtype=bool)
    if defined.any():
        mask[defined] = pareto_front(arr[defined], maximize)
    return mask


def compute_fronts(points: Sequence[FrontPoint], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The reward–KL front and one front per objective pair: name, file, axes, directions and the member mask."""
    fronts = [{"name": REWARD_KL, "file": f"{REWARD_KL}.png", "x": "kl", "y": "reward",
               "maximize": {"kl": False, "reward": True},
               "mask": _front_mask([[p.kl, p.reward] for p in points], [False, True])}]
    for a, b in itertools.combinations(objectives, 2):
        name = f"objective_{_safe_name(a)}_vs_{_safe_name(b)}"
        fronts.append({"name": name, "file": f"{name}.png", "x": a, "y": b, "maximize": {a: True, b: True},
                       "mask": _front_mask([[p.objectives[a], p.objectives[b]] for p in points], [True, True])})
    return fronts


# ---------------------------------------------------------------- plots

def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(p: FrontPoint) -> str:
    label = f"N={p.n}" if p.kind == "best_of_n" else p.name
    return label if p.answered_fraction >= 1.0 else f"{label}, {_share(p.answered_fraction)} answered"


def _share(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def _draw_points(ax: Any, points: Sequence[FrontPoint], xs: np.ndarray, ys: np.ndarray, mask: np.ndarray) -> None:
    """Markers by kind (Best-of-N open), name labels and rings around the non-dominated points."""
    seen: set[str] = set()
    legend = {"reference": "reference", "policy": "policy", "deal": "DeAL search (KL = −log π_ref(y*|x))",
              "best_of_n": "Best-of-N (open: KL is the bound log N − (N−1)/N)"}
    for p, x, y in zip(points, xs, ys, strict=True):
        style = KIND_STYLE[p.kind]
        face = "none" if p.kl_is_bound else style["color"]
        ax.scatter([x], [y], marker=style["marker"], s=40, facecolors=face, edgecolors=style["color"], zorder=3,
                   label=None if p.kind in seen else legend[p.kind])
        seen.add(p.kind)
        if np.isfinite(x) and np.isfinite(y):  # a point without a value (no answered prompt) is not drawn
            ax.annotate(_label(p), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if mask.any():
        ax.scatter(xs[mask], ys[mask], s=170, facecolors="none", edgecolors="tab:green", linewidths=1.6, zorder=2,
                   label="non-dominated")


def _step_front(ax: Any, xs: np.ndarray, ys: np.ndarray, mask: np.ndarray, x_max: bool) -> None:
    """The front as a staircase: best y attainable at each x (x minimised: 'post' steps; maximised: 'pre')."""
    if mask.sum() < 2:
        return
    fx, fy = xs[mask], ys[mask]
    order = np.argsort(fx, kind="stable")  # on a front, equal x means equal y
    ax.step(fx[order], fy[order], where="pre" if x_max else "post", color="tab:green", linewidth=1.0, alpha=0.7,
            zorder=1)


def plot_reward_vs_kl(points: Sequence[FrontPoint], mask: np.ndarray, title: str) -> bytes:
    """PNG bytes of the reward-vs-KL plot."""
    fig, ax = _figure()
    xs = np.array([p.kl for p in points])
    ys = np.array([p.reward for p in points])
    ref = [p for p in points if p.kind == "reference"]
    bon = sorted((p for p in points if p.kind == "best_of_n"), key=lambda p: p.n or 0)
    if bon:
        chain = ref[:1] + bon
        ax.plot([p.kl for p in chain], [p.reward for p in chain], linestyle="--", color="tab:orange", linewidth=1.0,
                zorder=1)
    for p in points:
        if p.kind in ("policy", "deal"):
            gain_se = _gain(p, points)[1]
            ax.errorbar([p.kl], [p.reward], xerr=None if p.kl_stderr is None else [p.kl_stderr],
                        yerr=None if gain_se is None else [gain_se], fmt="none",
                        ecolor="tab:blue", alpha=0.5, zorder=1)
    _step_front(ax, xs, ys, mask, x_max=False)
    _draw_points(ax, points, xs, ys, mask)
    ax.axvline(0.0, color="grey", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("KL(π ‖ π_ref) [nats]  (Best-of-N: upper bound)")
    ax.set_ylabel("mean reward (weighted RM score)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_objectives(points: Sequence[FrontPoint], a: str, b: str, mask: np.ndarray, title: str) -> bytes:
    """PNG bytes of objective `a` (x) against objective `b` (y)."""
    fig, ax = _figure()
    xs = np.array([p.objectives[a] for p in points])
    ys = np.array([p.objectives[b] for p in points])
    _step_front(ax, xs, ys, mask, x_max=True)
    _draw_points(ax, points, xs, ys, mask)
    ax.set_xlabel(f"mean {a} reward")
    ax.set_ylabel(f"mean {b} reward")
    ax.set_title(f"{title}: {a} vs {b}")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------- tables

def _fmt(value: float | None, stderr: float | None = None) -> str:
    if value is None or value != value:  # None or NaN: no value (a Best-of-N point that answered no prompt)
        return "–"
    return f"{value:.3f}" if stderr is None else f"{value:.3f} ± {stderr:.3f}"


def _gain(p: FrontPoint, points: Sequence[FrontPoint]) -> tuple[float | None, float | None]:
    """Reward gain over the reference point with its paired standard error (None without a comparable reference)."""
    ref = next((q for q in points if q.kind == "reference"), None)
    if ref is None or p is ref or len(p.per_prompt_reward) != len(ref.per_prompt_reward) or not ref.per_prompt_reward:
        return (0.0, 0.0) if p is ref else (None, None)
    return paired_gain(p, ref)


def _tokens_text(value: float) -> str:
    return "–" if value != value else f"{value:.1f}"


def _kl_text(p: FrontPoint) -> str:
    return f"≤ {p.kl:.3f} (bound)" if p.kl_is_bound else _fmt(p.kl, p.kl_stderr)


def format_front_table(points: Sequence[FrontPoint], on_front: Sequence[bool] | None = None) -> str:
    """A plain-text table of the points (reward ± standard error, answered %, gain, KL, objectives, finished %,
    front ✓)."""
    names = objective_names(points)
    header = ["name", "kind", "reward ± s.e.", "answered", "gain ± paired s.e.", "KL ± s.e.", *names, "finished",
              "front"]
    rows = [header]
    for i, p in enumerate(points):
        mark = "✓" if on_front is not None and on_front[i] else ""
        rows.append([p.name, p.kind, _fmt(p.reward, p.reward_stderr), _share(p.answered_fraction),
                     _fmt(*_gain(p, points)), _kl_text(p), *(_fmt(p.objectives[k]) for k in names),
                     _share(p.finished_fraction), mark])
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _meta_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _html_page(points: Sequence[FrontPoint], fronts: list[dict[str, Any]], images: dict[str, bytes], title: str,
               meta: dict[str, Any]) -> str:
    """The self-contained index.html."""
    esc = html.escape
    names = objective_names(points)
    head = ["name", "kind", "reward ± s.e.", "answered", "gain ± paired s.e.", "KL ± s.e.", *names, "finished",
            "tokens",
            *(("front: reward–KL" if f["name"] == REWARD_KL else f"front: {f['x']} × {f['y']}") for f in fronts)]
    rows = []
    for i, p in enumerate(points):
        cells = [p.name, p.kind, _fmt(p.reward, p.reward_stderr), _share(p.answered_fraction),
                 _fmt(*_gain(p, points)), _kl_text(p), *(_fmt(p.objectives[k]) for k in names),
                 _share(p.finished_fraction), _tokens_text(p.mean_response_tokens),
                 *("✓" if f["mask"][i] else "" for f in fronts)]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    meta_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(_meta_text(v))}</td></tr>"
                        for k, v in json_safe(meta).items())
    figures = "".join(
        f'<figure><img alt="{esc(f["name"])}" src="data:image/png;base64,'
        f'{base64.b64encode(images[f["file"]]).decode("ascii")}"><figcaption>{esc(f["file"])}</figcaption></figure>'
        for f in fronts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}
figure{{display:inline-block;margin:0.5em}}img{{max-width:520px}}</style></head>
<body><h1>{esc(title)}</h1>
<h2>Points</h2>
<table><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr>
{"".join(rows)}</table>
<h2>How the numbers were estimated</h2>
<p><b>Reward</b>: the mean over every sampled response (finished or cut at the token limit) of the reward model's
weighted score (its gating weights unless fixed weights were given); objectives are the mean per-objective rewards
of the same responses. <b>KL</b>: a Monte-Carlo estimate of KL(π ‖ π_ref), the mean over responses sampled from π of
Σ<sub>t</sub> log π(y<sub>t</sub>|·) − log π_ref(y<sub>t</sub>|·). ± is the standard error over prompts.
<b>Gain</b>: the mean over prompts of (this point's mean reward − the reference's) on the same prompts, with the
standard error of those paired differences (the error bars of the reward–KL plot): rewards vary far more between
prompts than between policies, so only the paired error says whether a policy beats the reference.
<b>Best-of-N</b> picks, among N reference samples, the FINISHED one with the highest weighted score (what
<code>paretoalign bon</code> returns with the same seed); a prompt where none of the N samples finished gets no
pick, so a Best-of-N point's reward, objectives, gain and tokens are over the prompts it answered, and
<b>answered</b> gives their share (policies and the reference answer every prompt: each of their samples counts,
finished or not). Its KL is the analytic upper bound log N − (N−1)/N (“≤ bound”, open markers), not an estimate.
The reference sits at KL 0.
A point is <b>non-dominated</b> (✓, ringed) when no other point is at least as good on both axes and better on one
(reward higher, KL lower; on objective plots both objectives higher).</p>
<h2>Plots</h2>
{figures}
<h2>Run</h2>
<table>{meta_rows}</table>
</body></html>
"""


# ---------------------------------------------------------------- report

def write_front_report(points: Sequence[FrontPoint], output_dir: str | Path, *,
                       objectives_to_plot: Sequence[str] | None = None, title: str = DEFAULT_TITLE,
                       meta: dict[str, Any] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write front.json, reward_vs_kl.png, objective_<a>_vs_<b>.png and index.html; returns front.json's content.

    The folder is written as a whole, atomically: it must be missing, empty or a previous front report (else
    InputError unless `overwrite`; see `paretoalign.output_paths`).
    """
    from paretoalign.output_paths import FRONT_REPORT, check_output_dir

    points = list(points)
    if not points:
        raise InputError("no points to report", field="points")
    duplicates = sorted({p.name for p in points if sum(q.name == p.name for q in points) > 1})
    if duplicates:
        raise InputError(f"point names must be unique, repeated: {duplicates}", field="names")
    out = check_output_dir(output_dir, FRONT_REPORT, overwrite=overwrite, field="output")
    objectives = choose_objectives(points, objectives_to_plot)
    fronts = compute_fronts(points, objectives)
    meta = dict(meta or {})
    images = {fronts[0]["file"]: plot_reward_vs_kl(points, fronts[0]["mask"], title)}
    for f in fronts[1:]:
        images[f["file"]] = plot_objectives(points, f["x"], f["y"], f["mask"], title)
    table = {
        "title": title,
        "meta": json.loads(json.dumps(json_safe(meta), default=str)),
        "objectives": objective_names(points),
        "plotted_objectives": objectives,
        "fronts": [{"name": f["name"], "file": f["file"], "x": f["x"], "y": f["y"], "maximize": f["maximize"],
                    "members": [p.name for p, on in zip(points, f["mask"], strict=True) if on]} for f in fronts],
        "points": [{**p.to_dict(), "on_front": {f["name"]: bool(f["mask"][i]) for f in fronts}}
                   for i, p in enumerate(points)],
    }
    page = _html_page(points, fronts, images, title, meta)
    with atomic_directory(out) as tmp:
        for file, data in images.items():
            (tmp / file).write_bytes(data)
        write_json_atomic(tmp / "front.json", table)
        write_text_atomic(tmp / "index.html", page)
    return table
