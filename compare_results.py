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
    boot = bootstrap_changes(dirs, names, summaries, rois)
    if boot.get("rois"):
        table["bootstrap"] = boot
        lines += ["", f"95% intervals, moving-block bootstrap of the test story's TRs ({boot['block_trs']}-TR blocks, "
                  f"{boot['n_boot']} samples, the same for every model):", "",
                  "| model | " + " | ".join(f"{r} Δ% vs {names[0]}" for r in boot["rois"]) + " |",
                  "|---|" + "---|" * len(boot["rois"])]
        for name in names[1:]:
            ci = boot["change_vs_first_pct_ci95"][name]
            lines.append(f"| {name} | " + " | ".join(f"{ci[r][0]:+.1f} to {ci[r][1]:+.1f}" for r in boot["rois"]) + " |")
    elif boot:
        table["bootstrap"] = boot
        lines += ["", f"No bootstrap intervals: {boot['skipped']}."]
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


def bootstrap_changes(dirs: list[Path], names: list[str], summaries: list[dict], rois: list[str],
                      block_trs: int = 10, n_boot: int = 1000, seed: int = 0) -> dict:
    """95% intervals of each model's upper-middle ROI cc_norm change vs the first model, and of every pairwise
    difference, from a paired moving-block bootstrap of the test TRs (`alignment.block_bootstrap_weights`).

    Needs the test predictions `brain_evaluate.py` keeps for ROI voxels (test_responses_roi.npz and the
    upper-middle layer files); returns {"skipped": why} when a folder lacks them or the folders' test data differ.
    """
    from alignment import block_bootstrap_weights, bootstrap_roi_cc_norm
    files = [Path(d) / "test_responses_roi.npz" for d in dirs]
    if not all(f.is_file() for f in files):
        return {"skipped": "a folder has no test_responses_roi.npz (evaluated without --roi-file, or before it existed)"}
    test = []
    for f in files:
        with np.load(f) as z:
            test.append({k: z[k] for k in z.files})
    if not all(t.keys() == test[0].keys() and all(np.array_equal(t[k], test[0][k]) for k in t) for t in test):
        return {"skipped": "the folders were evaluated on different voxels, responses or noise ceilings"}
    preds = []
    for d, s in zip(dirs, summaries):
        per_layer = []
        for l in s["upper_middle_layers"]:
            with np.load(Path(d) / f"layer_{l}.npz") as z:
                if "test_predictions_roi" not in z.files:
                    return {"skipped": f"{d}/layer_{l}.npz holds no test predictions"}
                per_layer.append(z["test_predictions_roi"])
        preds.append(per_layer)
    t0 = test[0]
    weights = block_bootstrap_weights(len(t0["responses"]), block_trs, n_boot, seed)
    out = {"block_trs": block_trs, "n_boot": n_boot, "seed": seed, "rois": [], "change_vs_first_pct_ci95": {},
           "difference_ci95": {}, "share_of_samples_above": {}}
    for roi in rois:
        if f"roi/{roi}" not in t0:
            continue
        cols = t0[f"roi/{roi}"]
        samples = bootstrap_roi_cc_norm([[p[:, cols] for p in per_layer] for per_layer in preds],
                                        t0["responses"][:, cols], t0["cc_max"][cols], weights, summaries[0]["nc_floor"])
        out["rois"].append(roi)
        change = 100.0 * (samples - samples[:, :1]) / np.abs(samples[:, :1])
        for k, name in enumerate(names):
            out["change_vs_first_pct_ci95"].setdefault(name, {})[roi] = _interval(change[:, k])
            for j in range(k):
                pair = f"{name} - {names[j]}"
                diff = samples[:, k] - samples[:, j]
                out["difference_ci95"].setdefault(pair, {})[roi] = _interval(diff)
                out["share_of_samples_above"].setdefault(pair, {})[roi] = float(np.mean(diff > 0))
    return out


def _interval(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.nanpercentile(x, [2.5, 97.5])]
