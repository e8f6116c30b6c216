"""Tables and plots of alignment results: one result folder, or several side by side (`--compare`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alignment import relative_change
from run_utils import read_result_json, write_json_atomic, write_text_atomic


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3f}"


def render_single(summary: dict) -> str:
    """Markdown table: per layer × ROI mean cc_norm (mean r), and the upper-middle-layer mean."""
    rois = list(next(iter(summary["per_layer"].values()))["rois"])
    lines = [f"### {summary['subject']} · {summary['model']}", "",
             "mean cc_norm (mean r) per layer and ROI; cc_norm only where cc_max > " + str(summary["nc_floor"]), "",
             "| layer | " + " | ".join(rois) + " |", "|---|" + "---|" * len(rois)]
    for layer, entry in summary["per_layer"].items():
        cells = [f"{_fmt(entry['rois'][r]['cc_norm'])} ({_fmt(entry['rois'][r]['r'])})" for r in rois]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    um = summary["upper_middle_mean"]
    lines.append(f"| upper-middle {summary['upper_middle_layers']} | " + " | ".join(_fmt(um[r]) for r in rois) + " |")
    if "upper_middle_low_level_impact" in summary:
        imp = summary["upper_middle_low_level_impact"]
        lines.append("| low-level impact % | " + " | ".join(_fmt(imp[r]) for r in rois) + " |")
    return "\n".join(lines) + "\n"


def compare(dirs: list[Path], out: Path) -> dict:
    """Side-by-side table (upper-middle mean cc_norm per ROI, % change vs the first) and layer plots."""
    from plotting import plot_layer_curves
    summaries = [read_result_json(d, "summary.json", "brain_evaluate.py", ("per_layer", "upper_middle_mean"))
                 for d in dirs]
    names = [Path(d).name for d in dirs]
    rois = [r for r in summaries[0]["upper_middle_mean"] if all(r in s["upper_middle_mean"] for s in summaries)]
    ref = summaries[0]["upper_middle_mean"]
    table = {"models": names, "rois": rois, "upper_middle_cc_norm": {}, "change_vs_first_pct": {}}
    lines = ["| model | " + " | ".join(f"{r} cc_norm | Δ% " for r in rois) + " |",
             "|---|" + "---|---|" * len(rois)]
    for name, s in zip(names, summaries):
        vals = s["upper_middle_mean"]
        table["upper_middle_cc_norm"][name] = {r: vals[r] for r in rois}
        table["change_vs_first_pct"][name] = {r: relative_change(vals[r], ref[r]) for r in rois}
        cells = [f"{_fmt(vals[r])} | {relative_change(vals[r], ref[r]):+.1f}" for r in rois]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if all("upper_middle_low_level_impact" in s for s in summaries):
        lines += ["", "| model | " + " | ".join(f"{r} low-level impact %" for r in rois) + " |", "|---|" + "---|" * len(rois)]
        for name, s in zip(names, summaries):
            lines.append(f"| {name} | " + " | ".join(_fmt(s["upper_middle_low_level_impact"][r]) for r in rois) + " |")
        table["low_level_impact_pct"] = {n: s["upper_middle_low_level_impact"] for n, s in zip(names, summaries)}
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.md", text)
    write_json_atomic(out / "comparison.json", table)
    layers = [int(l) for l in summaries[0]["per_layer"]]
    curves = {r: {n: [s["per_layer"].get(str(l), {}).get("rois", {}).get(r, {}).get("cc_norm", np.nan) for l in layers]
                  for n, s in zip(names, summaries)} for r in rois}
    plot_layer_curves(curves, layers, out / "alignment_by_layer.png", "mean cc_norm")
    print(text)
    return table
