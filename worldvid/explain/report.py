"""The explanation as things a person can look at: share plots, deletion curves, attribution overlays, one page."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from worldvid.atomic import temporary_name, write_bytes_atomic  # noqa: E402

TERM_COLORS = {"frames": "tab:blue", "actions": "tab:orange", "interaction": "tab:green"}


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = temporary_name(path)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_shares(per_step: Sequence[dict[str, dict[str, float]]], path: str | os.PathLike, title: str) -> Path:
    """Shares of the predicted change per open-loop step, with their intervals. per_step: one
    {term: {"share", "low", "high"}} per step (step 1 first). Writes a PNG at ``path``."""
    steps = np.arange(1, len(per_step) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    width = 0.27
    for i, term in enumerate(TERM_COLORS):
        share = np.array([s[term]["share"] for s in per_step])
        low = np.array([s[term]["low"] for s in per_step])
        high = np.array([s[term]["high"] for s in per_step])
        ax.bar(steps + (i - 1) * width, share, width, color=TERM_COLORS[term], label=term,
               yerr=np.abs(np.stack([share - low, high - share])), capsize=2)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("imagined step")
    ax.set_ylabel("share of the predicted change")
    ax.set_xticks(steps)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_deletion(fractions: np.ndarray, curves: dict[str, np.ndarray], areas: dict[str, float],
                  path: str | os.PathLike, title: str) -> Path:
    """Mean deletion curves (S after deleting the top share of features) per ordering; curves: {name: float [B, Q]}."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, curve in curves.items():
        ax.plot(fractions, curve.mean(0), label=f"{name} (area {areas[name]:.3f})",
                linestyle="--" if name == "random" else "-")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of inputs set to the baseline, most attributed first (log scale above 0.1%)")
    ax.set_ylabel("remaining predicted change S")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_attributions(context: np.ndarray, predicted: np.ndarray, real: np.ndarray, frames: np.ndarray,
                      actions: np.ndarray, path: str | os.PathLike, title: str) -> Path:
    """One row per prediction: the earlier context frames (dimmed) with their pixel attributions overlaid (magenta
    drives the predicted change, cyan works against it; scaled to the row's largest pixel attribution), the last
    frame (the scene itself), the predicted and the real next frame, and the action attributions as bars (scaled to
    the row's largest action attribution; their sizes beside the pixels' are in report.json).

    context: uint8 [B, K, H, W, 3]; predicted, real: uint8 [B, H, W, 3]; frames: float [B, K, H, W];
    actions: float [B, K, A]."""
    b, k = context.shape[:2]
    fig, axes = plt.subplots(b, k + 3, figsize=(1.45 * (k + 3), 1.5 * b), squeeze=False)
    for row in range(b):
        pixel_scale = max(float(np.abs(frames[row]).max()), 1e-12)
        action_scale = max(float(np.abs(actions[row]).max()), 1e-12)
        for col in range(k):
            ax = axes[row, col]
            if col < k - 1:  # the frame dimmed to grey under its attributions, so they show whatever its colours
                grey = context[row, col].astype(np.float32).mean(-1, keepdims=True) / 255
                ax.imshow(np.repeat(0.25 + 0.5 * grey, 3, -1))
                ax.imshow(_heat(frames[row, col] / pixel_scale))
            else:
                ax.imshow(context[row, col])
            if row == 0:
                ax.set_title(f"frame t-{k - 1 - col}" if col < k - 1 else "frame t (scene)", fontsize=7)
        for col, (img, name) in enumerate(((predicted[row], "predicted t+1"), (real[row], "real t+1")), start=k):
            axes[row, col].imshow(img)
            if row == 0:
                axes[row, col].set_title(name, fontsize=7)
        ax = axes[row, k + 2]
        flat = actions[row].reshape(-1)
        ax.barh(np.arange(len(flat)), flat / action_scale, color=["magenta" if v > 0 else "c" for v in flat])
        ax.set_xlim(-1, 1)
        ax.set_yticks(np.arange(len(flat)))
        ax.set_yticklabels([f"a{j - k + 1}[{d}]" for j in range(k) for d in range(actions.shape[-1])], fontsize=5)
        ax.tick_params(axis="x", labelsize=5)
        if row == 0:
            ax.set_title("actions", fontsize=7)
        for ax in axes[row, :k + 2]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def _heat(values: np.ndarray) -> np.ndarray:
    """An RGBA overlay of values float [H, W] in [-1, 1]: magenta where positive, cyan where negative, opacity |v|
    (so pixels without attribution leave the frame as it is)."""
    rgba = np.zeros((*values.shape, 4), np.float32)
    rgba[..., 0] = values > 0
    rgba[..., 1] = values < 0
    rgba[..., 2] = 1
    rgba[..., 3] = np.clip(np.abs(values) * 1.5, 0, 1)
    return rgba


def _share_cell(entry: dict[str, float]) -> str:
    return f"{entry['share']:+.1%} [{entry['low']:+.1%}, {entry['high']:+.1%}]"


def write_html(report: dict[str, Any], out: str | os.PathLike, pictures: dict[str, str]) -> Path:
    """A static page at OUT/report.html: the share tables, the faithfulness figures and the pictures
    (file names relative to OUT, keyed by caption)."""
    d = report["decomposition"]
    rows = "".join(
        f"<tr><td>{step}</td>" + "".join(f"<td>{_share_cell(entry[t])}</td>" for t in TERM_COLORS) + "</tr>"
        for step, entry in enumerate(d["per_step"], start=1))
    faith = report["attribution"]
    faith_rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{area:.4f}</td><td>{faith['area_ratio'].get(name, 1.0):.3f}</td></tr>"
                         for name, area in faith["area"].items())
    flag = f"<p class='flag'>{html.escape(report['flag'])}</p>" if report.get("flag") else ""
    figures = "".join(f"<figure><img src='{html.escape(src)}'><figcaption>{html.escape(caption)}</figcaption></figure>"
                      for caption, src in pictures.items())
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>worldvid explain: {html.escape(report['model'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;text-align:right}}
.flag{{color:#b00;font-weight:bold}}img{{max-width:100%}}</style></head><body>
<h1>What the model takes from the frames, what from the actions</h1>
<p>model <code>{html.escape(report['model'])}</code> ({html.escape(str(report['env_id']))}), data <code>{html.escape(report['data'])}</code>,
{d['windows']} held-out windows, baselines: context = {html.escape(d['context_baseline'])}, actions = {html.escape(d['action_baseline'])}.</p>
{flag}
<h2>Shares of the predicted change (95% bootstrap intervals over windows)</h2>
<table><tr><th>step</th><th>frames</th><th>actions</th><th>interaction</th></tr>{rows}
<tr><td>all</td>{''.join(f'<td>{_share_cell(d["all_steps"][t])}</td>' for t in TERM_COLORS)}</tr></table>
<h2>Faithfulness: deletion-curve area (smaller is more faithful)</h2>
<table><tr><th>ordering</th><th>area</th><th>vs random</th></tr>{faith_rows}</table>
<p>chosen attribution: <b>{html.escape(faith['chosen'])}</b></p>
{figures}
<p>{html.escape(report['seconds_note'])}</p></body></html>"""
    return write_bytes_atomic(Path(out) / "report.html", page.encode())
