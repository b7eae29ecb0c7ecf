"""What `python -m fastcodec.eval` writes: CSV tables, a markdown summary, and a PNG of quality
against bitrate (with matplotlib, from the `[eval]` extra). Every file is written atomically."""
from __future__ import annotations

import csv
import io
import math

from ..atomic import atomic_output

LABELS = {"si_sdr": "SI-SDR dB", "mel": "mel distance", "stoi": "STOI", "pesq": "PESQ-wb"}
BETTER = {"si_sdr": "higher", "mel": "lower", "stoi": "higher", "pesq": "higher"}


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_csv(path, rows, columns):
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: _fmt(r.get(c, "")) for c in columns})
    with atomic_output(path) as f:
        f.write(buf.getvalue().encode())


def write_text(path, text: str):
    with atomic_output(path) as f:
        f.write(text.encode())


def _cell(v, digits):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(summary, usage, metrics, header_lines) -> str:
    """The summary as markdown: a quality table per category (rows: bitrates) and codebook usage."""
    digits = {"si_sdr": 2, "mel": 3, "stoi": 3, "pesq": 2}
    out = list(header_lines) + [""]
    cols = ["category", "n_q", "kbps", "files", "minutes"] + [f"{LABELS[k]} ({BETTER[k]} is better)" for k in metrics]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in summary:
        cells = [s["category"], str(s["n_q"]), f"{s['kbps']:.2f}", str(s["files"]), f"{s['seconds'] / 60:.1f}"]
        cells += [_cell(s.get(k), digits[k]) for k in metrics]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Codebook usage at full depth (perplexity: codes in effective use; dead: never chosen):", "",
            "| category | stage | perplexity | dead % |", "|---|---|---|---|"]
    out += [f"| {u['category']} | {u['stage']} | {u['perplexity']:.1f} | {u['dead_pct']:.1f} |" for u in usage]
    return "\n".join(out) + "\n"


def plot_png(path, summary, metrics, title: str) -> str | None:
    """Quality against bitrate, a panel per metric and a line per category. Returns None when
    written, else why not (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib is not installed ({type(exc).__name__}); pip install -e \".[eval]\" for the PNG"
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), squeeze=False)
    cats = list(dict.fromkeys(s["category"] for s in summary))
    for ax, k in zip(axes[0], metrics):
        for cat in cats:
            pts = [(s["kbps"], s[k]) for s in summary if s["category"] == cat and not math.isnan(s[k])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=cat, linestyle="--" if cat == "all" else "-")
        ax.set_xlabel("kbps")
        ax.set_title(f"{LABELS[k]} ({BETTER[k]} is better)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_output(path) as f:
        f.write(buf.getvalue())
    return None
