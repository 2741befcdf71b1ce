"""The quality report's plots (matplotlib, Agg, no pyplot state): Recall@K curves,
training losses and Recall@100 by query exposure. Byte-stable for the same
numbers and matplotlib version (no "Software" metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from evaluation.report_format import (
    BUCKET_ORDER,
    HEADLINE_K,
    flat_recall,
    floor_of,
    k_sort,
    label_of,
    signal_label,
    signals_of,
)

DPI = 120

def _series(values: Sequence[Any]):
    import numpy as np
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _finite_max(y) -> float:
    import numpy as np
    y = np.asarray(y, dtype=float)
    return float(np.nanmax(y)) if np.isfinite(y).any() else 0.0


def _moving_average(y, window: int):
    import numpy as np
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def _style(i: int, system: Mapping) -> dict:
    from matplotlib import colormaps
    color = colormaps["tab10"](i % 10)
    if system.get("group") == "notellm":
        return {"color": color, "lw": 2.2, "marker": "o", "ms": 4}
    return {"color": color, "lw": 1.4, "marker": "s", "ms": 3.5}


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    # No "Software" metadata: the same numbers give the same bytes across matplotlib patch versions.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def plot_recall_at_k(results: Mapping, path: Path) -> Path | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter
    sigs = [sig for sig in signals_of(results) if any(
        (s.get("recall_curve") or {}).get(sig) or (s.get("recall") or {}).get(sig) for s in results["systems"])]
    if not sigs:
        return None
    fig = Figure(figsize=(6.2 * len(sigs), 5.2), layout="constrained")
    axes = fig.subplots(1, len(sigs), squeeze=False)[0]
    floor = floor_of(results)
    for ax, sig in zip(axes, sigs):
        top = 0.0
        for i, s in enumerate(results["systems"]):
            curve = (s.get("recall_curve") or {}).get(sig)
            if curve and curve.get("k"):
                k, r = list(curve["k"]), _series(curve["recall"]) * 100
            elif (s.get("recall") or {}).get(sig):
                ks = k_sort(s["recall"][sig])
                k, r = [int(x) for x in ks], _series([s["recall"][sig][x] for x in ks]) * 100
            else:
                continue
            ax.plot(k, r, label=label_of(s), **_style(i, s))
            top = max(top, _finite_max(r))
        fcurve = (floor.get("recall_curve") or {}).get(sig)
        frec = (floor.get("recall") or {}).get(sig)
        if fcurve and fcurve.get("k"):
            fk, fr = list(fcurve["k"]), _series(fcurve["recall"]) * 100
        elif frec:
            ks = k_sort(frec)
            fk, fr = [int(x) for x in ks], _series([frec[x] for x in ks]) * 100
        else:
            fk = None
        if fk:
            ax.plot(fk, fr, ls="--", color="0.45", lw=1.5, label="random within category (floor)")
            top = max(top, _finite_max(fr))
        ax.axvline(int(HEADLINE_K), color="0.85", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))   # 1, 10, 100 instead of 10^k
        ax.set_ylim(0, min(102.0, top * 1.08 + 1))
        ax.set_xlabel("K (log scale)")
        ax.set_ylabel("Recall@K (%)")
        pairs = next(((s.get("pairs") or {}).get(sig) for s in results["systems"] if (s.get("pairs") or {}).get(sig)),
                     None)
        title = signal_label(results, sig)
        title = title if len(title) <= 60 else title[:59] + "…"
        ax.set_title(title + (f"\n{pairs:,} pairs" if pairs else ""), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    return _save(fig, path)


def plot_loss_curves(results: Mapping, path: Path) -> Path | None:
    import numpy as np
    from matplotlib.figure import Figure
    trained = [(i, s) for i, s in enumerate(results["systems"]) if (s.get("loss_curve") or {}).get("step")]
    if not trained:
        return None
    panels = [("l_cl", "L_cl (contrastive)")]
    if any(np.isfinite(_series((s["loss_curve"].get("l_gen") or []))).any() for _, s in trained):
        panels.append(("l_gen", "L_gen (generative, CSFT)"))
    fig = Figure(figsize=(6.2 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for i, s in trained:
            lc = s["loss_curve"]
            step, y = _series(lc["step"]), _series(lc.get(key) or [])
            if len(y) != len(step) or not np.isfinite(y).any():
                continue
            ok = np.isfinite(y)
            step, y = step[ok], y[ok]
            st = _style(i, s)
            window = max(1, len(y) // 20)
            if window > 1:   # raw losses are noisy: faint raw line + moving average
                ax.plot(step, y, color=st["color"], lw=0.8, alpha=0.25)
                ax.plot(step[window - 1:], _moving_average(y, window), color=st["color"], lw=st["lw"],
                        label=label_of(s))
            else:
                ax.plot(step, y, color=st["color"], lw=st["lw"], label=label_of(s))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def plot_recall_by_exposure(results: Mapping, path: Path) -> Path | None:
    import numpy as np
    from matplotlib.figure import Figure
    systems = [s for s in results["systems"] if s.get("by_exposure")]
    if not systems:
        return None
    buckets = [b for b in BUCKET_ORDER if any(b in s["by_exposure"] for s in systems)]
    buckets += sorted({b for s in systems for b in s["by_exposure"]} - set(buckets))
    fig = Figure(figsize=(max(7.0, 1.25 * len(systems) + 2.5), 5.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(systems))
    width = 0.8 / len(buckets)
    colors = ["#8fb8de", "#1f5f99", "#c98b2c", "#6a3d9a"]
    fb = floor_of(results).get("by_exposure") or {}
    for j, b in enumerate(buckets):
        vals = _series([flat_recall(s["by_exposure"].get(b)).get(HEADLINE_K) for s in systems]) * 100
        pairs = (systems[0]["by_exposure"].get(b) or {}).get("pairs")
        bars = ax.bar(x + (j - (len(buckets) - 1) / 2) * width, np.nan_to_num(vals), width,
                      color=colors[j % len(colors)], label=f"{b} exposure" + (f" ({pairs} pairs)" if pairs else ""))
        for rect, v in zip(bars, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points",
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        floor_v = flat_recall(fb.get(b)).get(HEADLINE_K)
        if floor_v is not None:
            ax.axhline(100 * floor_v, ls="--", lw=1.2, color=colors[j % len(colors)],
                       label=f"random within category, {b} (floor)")
    ax.set_xticks(x, [label_of(s) for s in systems], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"Recall@{HEADLINE_K} (%)")
    ax.set_title(f"Recall@{HEADLINE_K} on the mined pairs by query exposure", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)   # room for the value labels
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(fig, path)


def render_plots(results: Mapping, plot_dir: Path) -> dict[str, Path]:
    """Write the PNGs; returns {plot name: path} for those that had data."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, fn in (("recall_at_k", plot_recall_at_k), ("loss_curves", plot_loss_curves),
                     ("recall_by_exposure", plot_recall_by_exposure)):
        path = fn(results, plot_dir / f"{name}.png")
        if path is not None:
            made[name] = path
        elif (plot_dir / f"{name}.png").exists():   # stale plot from an earlier run with more data
            (plot_dir / f"{name}.png").unlink()
    return made
