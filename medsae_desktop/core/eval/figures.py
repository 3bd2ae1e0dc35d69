"""Report figures (PNG, matplotlib Agg) and the self-contained ``report.html``.

Figures: correlation heat map of alive units × labels sorted by entropy (as the official
plotting script), entropy histogram, activation-frequency histogram, monosemanticity
histogram and per-label best correlation; histograms and bars overlay a second report (e.g.
SAE vs raw) when one is given. No Qt, no printing; the Agg backend is selected here, never a
GUI backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medsae_desktop.core.eval.report import HEATMAP_UNITS, HTML_NAME, Report, esc, png_data_uri

_COLORS = ("#1f77b4", "#d62728")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless and thread-safe enough for a worker; never a GUI backend
    import matplotlib.pyplot as plt

    return plt


def heatmap_units(report: Report, n_max: int = HEATMAP_UNITS, seed: int = 0) -> np.ndarray:
    """Units shown in the heat map: alive units (each label's best first, then a seeded random
    sample up to ``n_max``), sorted by entropy; the strongest units when none is alive."""
    alive = np.flatnonzero(report.alive_k)
    if alive.size == 0:
        if not report.label_names:
            return np.zeros(0, np.int64)
        strength = np.abs(report.corr_kc).max(axis=1)
        chosen = np.argsort(-strength, kind="stable")[:n_max]
    elif alive.size <= n_max:
        chosen = alive
    else:
        best = report.arrays.get("best_unit_c")
        first = [] if best is None else [int(u) for u in np.unique(best) if u >= 0]
        rest = np.setdiff1d(alive, first)
        rng = np.random.default_rng(seed)
        fill = rng.choice(rest, size=max(0, n_max - len(first)), replace=False)
        chosen = np.concatenate([np.asarray(first, np.int64), fill])[:n_max]
    order = np.argsort(report.entropy_k[chosen], kind="stable")
    return np.asarray(chosen, np.int64)[order]


def write_figures(report: Report, out_dir: Path, other: Report | None = None) -> dict[str, Path]:
    """Write the PNG figures of ``report`` into ``out_dir``; returns ``{name: path}``."""
    plt = _plt()
    figs: dict[str, Path] = {}
    name_a = f"{report.kind} ({report.path.name})"
    name_b = None if other is None else f"{other.kind} ({other.path.name})"

    # Heat map: units × labels sorted by entropy.
    units = heatmap_units(report)
    if units.size and report.label_names:
        corr = report.corr_kc[units]
        vmax = max(float(np.abs(corr).max()), 1e-6)
        h = min(14.0, 2.0 + 0.22 * units.size)
        fig, ax = plt.subplots(figsize=(2.0 + 0.55 * len(report.label_names), h))
        im = ax.imshow(corr, aspect="auto", cmap="coolwarm", vmin=-vmax, vmax=vmax,
                       interpolation="nearest")
        ax.set_xticks(range(len(report.label_names)))
        ax.set_xticklabels(report.label_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(units.size))
        ax.set_yticklabels([f"{u} (H={report.entropy_k[u]:.2f})" for u in units], fontsize=7)
        ax.set_ylabel("unit (entropy)")
        alive_txt = "alive units" if report.alive_k.any() else "strongest units (none alive)"
        ax.set_title(f"{name_a}: {alive_txt}, sorted by entropy", fontsize=9)
        fig.colorbar(im, ax=ax, label="Correlation Coefficient")
        figs["heatmap"] = _save(fig, out_dir / "heatmap.png", plt)

    # Entropy histogram (alive units), overlaid with the other report.
    if report.label_names:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        hi = math.log(len(report.label_names)) if len(report.label_names) > 1 else 1.0
        bins = np.linspace(0, hi, 31)
        for i, (r, nm) in enumerate(((report, name_a), (other, name_b))):
            if r is None:
                continue
            e = r.entropy_k[r.alive_k]
            if e.size:
                ax.hist(e, bins=bins, density=True, alpha=0.55, color=_COLORS[i],
                        label=f"{nm}: {e.size} alive, mean {e.mean():.3f}")
        ax.set_xlabel("entropy of |ρ| over labels (nats; lower = more monosemantic)")
        ax.set_ylabel("density")
        ax.set_title("Entropy of alive units", fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no alive unit", ha="center", transform=ax.transAxes)
        figs["entropy_hist"] = _save(fig, out_dir / "entropy_hist.png", plt)

    # Activation frequency (log scale).
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (r, nm) in enumerate(((report, name_a), (other, name_b))):
        if r is None:
            continue
        f = r.frequency_k
        pos = f[f > 0]
        if pos.size:
            ax.hist(np.log10(pos), bins=40, alpha=0.55, color=_COLORS[i], density=True,
                    label=f"{nm}: {int((f == 0).sum())} never active")
    ax.set_xlabel("log10 activation frequency (fraction of images with activation > 1e-7)")
    ax.set_ylabel("density")
    ax.set_title("Activation frequency", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    figs["frequency_hist"] = _save(fig, out_dir / "frequency_hist.png", plt)

    # Monosemanticity score.
    if np.isfinite(report.ms_k).any():
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for i, (r, nm) in enumerate(((report, name_a), (other, name_b))):
            if r is None:
                continue
            ms = r.ms_k[np.isfinite(r.ms_k)]
            if ms.size:
                ax.hist(ms, bins=40, alpha=0.55, color=_COLORS[i], density=True,
                        label=f"{nm}: mean {ms.mean():.3f}")
        ax.set_xlabel("monosemanticity score (higher = more monosemantic)")
        ax.set_ylabel("density")
        ax.set_title("Monosemanticity score (Pach et al.)", fontsize=10)
        ax.legend(fontsize=8)
        figs["ms_hist"] = _save(fig, out_dir / "ms_hist.png", plt)

    # Per-label best correlation.
    if report.label_names:
        labels = list(report.label_names)
        va = _best_corr_by_label(report)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(labels) + 2), 3.8))
        x = np.arange(len(labels))
        width = 0.4 if other is not None else 0.7
        ax.bar(x - (width / 2 if other is not None else 0), [va.get(lab, np.nan) for lab in labels],
               width, color=_COLORS[0], label=name_a)
        if other is not None:
            vb = _best_corr_by_label(other)
            ax.bar(x + width / 2, [vb.get(lab, np.nan) for lab in labels], width,
                   color=_COLORS[1], label=name_b)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("ρ of the best alive unit")
        ax.set_title("Best unit per label", fontsize=10)
        top = np.nanmax([*va.values(), *(_best_corr_by_label(other).values()
                                          if other is not None else []), 0.1])
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.25 * float(top))  # room for the legend
        ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
        figs["per_label"] = _save(fig, out_dir / "per_label.png", plt)
    return figs


def _best_corr_by_label(r: Report) -> dict[str, float]:
    out = {}
    for row in r.summary.get("per_label", []):
        v = row.get("best_corr")
        out[row["label"]] = np.nan if v is None else float(v)
    return out


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(report: Report, out_dir: Path, figs: dict[str, Path], *,
               comparison: dict[str, Any] | None = None, other: Report | None = None) -> Path:
    """Write the self-contained ``report.html`` (figures inlined as data URIs)."""
    s = report.summary
    rows = [
        ("kind", s.get("kind")), ("cache", s.get("cache")), ("SAE", s.get("sae") or "—"),
        ("SAE id", (s.get("sae_id") or "—")[:16]), ("images", s.get("n_images")),
        ("units", s.get("n_units")), ("labels", ", ".join(s.get("labels") or []) or "—"),
        ("label source", s.get("label_source")),
        ("uncertainty policy", s.get("config", {}).get("uncertain")),
        ("balanced subset", s.get("config", {}).get("balanced") or "—"),
        ("mean best correlation", _f(s.get("mean_best_corr"))),
        ("mean entropy of best units", _f(s.get("mean_best_entropy"))),
        ("alive units (max |ρ| > 0.2)", f"{s.get('n_alive')} ({_f(s.get('frac_alive'))})"),
        ("mean entropy of alive units", _f(s.get("mean_entropy_alive"))),
        ("mean monosemanticity score", f"{_f(s.get('mean_ms'))} ± {_f(s.get('std_ms'))} "
                                       f"({s.get('n_ms')} units)"),
        ("mean best F1 (binarised units)", _f(s.get("mean_best_f1"))),
        ("never-active units", s.get("n_never_active")),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>medsae evaluation — {esc(report.path.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px;text-align:left}th{background:#f2f2f2}"
        "img{max-width:100%;border:1px solid #eee;margin:6px 0}"
        ".win{font-weight:600;color:#1a7f37}</style></head><body>",
        f"<h1>Evaluation report: {esc(report.path.name)}</h1>",
        "<h2>Summary</h2><table>",
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows),
        "</table>",
    ]
    rec = s.get("reconstruction")
    if rec:
        parts.append("<h2>Reconstruction (SAE)</h2><table>")
        parts += [f"<tr><th>{esc(k)}</th><td>{esc(_f(v))}</td></tr>" for k, v in rec.items()]
        parts.append("</table>")
    if comparison is not None:
        a, b = comparison["a"]["name"], comparison["b"]["name"]
        parts.append(f"<h2>Comparison: {esc(a)} vs {esc(b)}</h2><table>"
                     f"<tr><th>metric</th><th>{esc(a)}</th><th>{esc(b)}</th>"
                     "<th>more monosemantic</th></tr>")
        for r in comparison["metrics"]:
            parts.append(f"<tr><td>{esc(r['name'])} ({esc(r['better'])} is better)</td>"
                         f"<td>{esc(_f(r['a']))}</td><td>{esc(_f(r['b']))}</td>"
                         f"<td class='win'>{esc(r['winner'] or 'n/a')}</td></tr>")
        parts.append("</table>")
        for note in comparison.get("notes", []):
            parts.append(f"<p><b>Note:</b> {esc(note)}.</p>")
        won = comparison["labels_won"]
        if comparison["per_label"]:
            parts.append(f"<p>Labels whose best unit correlates more: {esc(a)}: "
                         f"{won.get(a, 0)}, {esc(b)}: {won.get(b, 0)}.</p>")
    if s.get("per_label"):
        parts.append("<h2>Per label</h2><table><tr><th>label</th><th>positives</th>"
                     "<th>best unit</th><th>ρ</th><th>entropy</th><th>best F1 unit</th>"
                     "<th>F1</th><th>precision</th><th>recall</th></tr>")
        for r in s["per_label"]:
            parts.append(
                f"<tr><td>{esc(r['label'])}</td><td>{r['n_positive']}</td>"
                f"<td>{r['best_unit'] if r['best_unit'] >= 0 else '—'}</td>"
                f"<td>{_f(r.get('best_corr'))}</td><td>{_f(r.get('best_entropy'))}</td>"
                f"<td>{r.get('best_f1_unit', '—')}</td><td>{_f(r.get('best_f1'))}</td>"
                f"<td>{_f(r.get('best_f1_precision'))}</td><td>{_f(r.get('best_f1_recall'))}</td>"
                "</tr>")
        parts.append("</table>")
    captions = {
        "heatmap": "Correlation of alive units with the labels, sorted by entropy",
        "per_label": "Best alive unit per label",
        "entropy_hist": "Entropy of alive units",
        "ms_hist": "Monosemanticity score",
        "frequency_hist": "Activation frequency",
    }
    parts.append("<h2>Figures</h2>")
    for key, cap in captions.items():
        if key in figs:
            parts.append(f"<h3>{esc(cap)}</h3><img alt='{esc(cap)}' "
                         f"src='{png_data_uri(figs[key])}'>")
    parts.append("<p style='color:#777;font-size:12px'>Metrics as DESIGN.md §5.3 (official "
                 "MedSAE definitions). Research use only; not for clinical use.</p>")
    parts.append("</body></html>\n")
    path = out_dir / HTML_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


def _f(v: Any) -> str:
    if v is None:
        return "—"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "—" if not math.isfinite(x) else f"{x:.4f}"
