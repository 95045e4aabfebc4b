"""The bar charts of a benchmark report: one PNG per chosen metric, ours beside published rows."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privrec.evaluation.report_results import ModelResult, anchor_metrics, is_number

__all__ = ["bar_chart", "chart_file_name", "chart_keys"]


def chart_keys(keys: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The charted metrics: `wanted` among `keys`, else the first NDCG@k and Recall@k (or HR@k)."""
    if wanted is not None:
        return [k for k in wanted if k in keys]
    out = []
    for prefix in ("ndcg@", "recall@"):
        hit = [k for k in keys if k.startswith(prefix)]
        if hit:
            out.append(hit[0])
    if not any(k.startswith("recall@") for k in out):
        out += [k for k in keys if k.startswith("hr@")][:1]
    return out


def bar_chart(
    key: str, results: Sequence[ModelResult], anchors: Sequence[Mapping[str, Any]]
) -> bytes:
    """One metric's bar chart as PNG bytes: our models in blue, published rows hatched grey."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names, vals, errs, colors, hatches = [], [], [], [], []
    for r in results:
        v = r.metrics.get(key)
        if is_number(v) and math.isfinite(float(v)):
            names.append(r.model)
            vals.append(float(v))
            errs.append((0.0, 0.0))
            colors.append("#3b6ea8")
            hatches.append("")
    for a in anchors:
        v = anchor_metrics(a).get(key)
        if v is None:
            continue
        if isinstance(v, (tuple, list)):
            lo, hi = float(v[0]), float(v[1])
            mid = (lo + hi) / 2
            vals.append(mid)
            errs.append((mid - lo, hi - mid))
        else:
            vals.append(float(v))
            errs.append((0.0, 0.0))
        names.append(f"{a['model']} (published)")
        colors.append("#b8b8b8")
        hatches.append("//")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(names) + 2.0), 3.8), dpi=110)
    x = np.arange(len(names))
    bars = ax.bar(x, vals, color=colors, edgecolor="#555555", linewidth=0.6)
    for bar, h in zip(bars, hatches, strict=True):
        bar.set_hatch(h)
    e = np.array(errs).T if errs else None
    if e is not None and e.size and e.max() > 0:
        ax.errorbar(x, vals, yerr=e, fmt="none", ecolor="#333333", capsize=3, linewidth=0.8)
    for xi, v in zip(x, vals, strict=True):
        ax.text(float(xi), v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(key)
    ax.set_title(f"{key} per model")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    # no Software metadata: the PNG then holds no URL and no version string
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def chart_file_name(stem: str, key: str) -> str:
    """The PNG file name of metric `key`'s chart in a report named `stem`."""
    return f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}.png"
