"""Tables and plots of alignment results: one result folder, several side by side (`--compare`), or the same
models across subjects (`--subject-results`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alignment import (LOW_LEVEL_GROUPS, mean_sem, relative_change, signed_change, stories_to_match,
                       upper_middle_mismatch_note, wilcoxon_compare)
from atomic_io import save_npz_atomic, write_json_atomic, write_text_atomic
from run_utils import NPY_READ_ERRORS, check_same_readout, check_same_settings, read_result_json, result_labels


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3f}"


def low_level_groups(summary: dict) -> tuple:
    """The low-level feature groups a result regressed out (results written before the choice existed: all)."""
    return tuple(summary.get("low_level_groups", LOW_LEVEL_GROUPS))


# how results written before the record existed chose the residual model's alphas (changed in 0ae366b)
EARLIER_RESIDUAL_MODEL = "corr over logspace(1, 4, 15)"


def low_level_residual_model(summary: dict) -> str:
    """How a result's low-level residual model chose its alphas, e.g. "r2 over logspace(-3, 4, 29)"."""
    return summary.get("low_level_residual_model", EARLIER_RESIDUAL_MODEL)


def _check_same_low_level_measure(dirs, summaries) -> None:
    """Low-level impacts computed from different feature groups, or with residual models fitted differently, are
    different measures: refuse to table them."""
    groups = [low_level_groups(s) for s in summaries]
    if len(set(groups)) > 1:
        found = "; ".join(f"{d}: {', '.join(g)}" for d, g in zip(dirs, groups))
        raise ValueError(f"low-level impacts from different --low-level-groups cannot be compared ({found}); "
                         f"expected the same groups in every folder")
    residual = [low_level_residual_model(s) for s in summaries]
    if len(set(residual)) > 1:
        found = "; ".join(f"{d}: {r}" for d, r in zip(dirs, residual))
        raise ValueError(f"low-level impacts from residual models that chose their alphas differently cannot be "
                         f"compared ({found}); evaluate the older folders again with --low-level")


# summary.json settings every result of a comparison shares, within a subject and across subjects -> their names
EVALUATION_SETTINGS = {"test_story": "test story", "nc_floor": "--nc-floor", "ridge_score": "--ridge-score",
                       "stride": "--stride", "context": "--context", "tr_grids": "TR grids (--tr, --trfiles)"}
READOUT_SETTINGS = {"pooling": "--pooling", "whisper_mode": "--whisper-mode"}  # shared within a model family
ONE_SUBJECT = ("the models compared must be evaluated on one subject's test story with one --nc-floor, noise-ceiling "
               "file, --ridge-score, --stride, --context and TR grid")


def _check_subjects_alike(dirs, summaries) -> None:
    """--subject-results: every subject's results (`dirs`, one per subject) evaluated with the settings of
    EVALUATION_SETTINGS and READOUT_SETTINGS alike, else the group statistic mixes measures; refuse those that
    differ."""
    check_same_settings(dirs, summaries, EVALUATION_SETTINGS, "every subject's results must be evaluated alike (test "
                        "story, --nc-floor, --ridge-score, --stride, --context, TR grid) for a group statistic")
    check_same_readout(dirs, summaries, READOUT_SETTINGS)


def _check_one_subject_and_test(dirs, summaries) -> None:
    """The models compared (--compare, or one subject's --subject-results) must be measured on the same voxels and
    test story with the same cc_norm floor, noise ceiling, alpha criterion, feature sampling (stride, context, TR
    grids) and encoding-model training stories, and models of one family read out alike (pooling, Whisper mode);
    refuse folders that differ (a subject's Δ% against another subject's, cc_norm under another ceiling, from alphas
    chosen otherwise, from features sampled otherwise or from more training data, is not a model effect)."""
    check_same_settings(dirs, summaries, {"subject": "subject"}, ONE_SUBJECT + " (across subjects: --subject-results)")
    check_same_settings(dirs, summaries, {"noise_ceiling_digest": "noise ceiling (cc_max digest)",
                                          **EVALUATION_SETTINGS}, ONE_SUBJECT)
    check_same_readout(dirs, summaries, READOUT_SETTINGS)
    # an ROI's mean over other voxels (another --roi-file, an edited one) is another measure under the same name
    first = summaries[0].get("roi_digests") or {}
    for d, s in zip(dirs[1:], summaries[1:]):
        if differ := sorted(r for r, v in (s.get("roi_digests") or {}).items() if r in first and first[r] != v):
            raise ValueError(f"{d}: ROI {', '.join(differ)} holds other voxels than in {dirs[0]}: the models compared "
                             f"must be evaluated with one --roi-file (ROIs one of them lacks are left out)")
    # alignment rises with the encoding model's training data (README: data efficiency): other stories confound
    first = summaries[0].get("train_stories")
    for d, s in zip(dirs[1:], summaries[1:]):
        this = s.get("train_stories")
        if isinstance(first, list) and isinstance(this, list) and sorted(this) != sorted(first):
            lacks, adds = sorted(set(first) - set(this)), sorted(set(this) - set(first))
            which = ", ".join(f"{verb} {stories}" for verb, stories in (("lacking", lacks), ("adding", adds)) if stories)
            raise ValueError(f"{d}: encoding models fitted on {len(this)} training stories, {len(first)} for {dirs[0]} "
                             f"({which}): the models compared "
                             f"must be evaluated on the same training stories (--train-stories), since alignment "
                             f"rises with them")


def _low_level_label(summary: dict) -> str:
    groups = low_level_groups(summary)
    return "low-level impact %" + ("" if groups == LOW_LEVEL_GROUPS else f" ({', '.join(groups)})")


def efficiency_curve(eff: dict, full: dict[str, float]) -> tuple[list[int], dict[str, list[float]]]:
    """Counts and mean alignment per ROI of a data_efficiency record, ending with the full-data point (`full`:
    the upper-middle mean on every training story) unless the draws include it."""
    counts, means = list(eff["counts"]), {r: list(v) for r, v in eff["mean"].items()}
    if counts[-1] != eff["n_train_stories"]:
        counts.append(eff["n_train_stories"])
        for r in means:
            means[r].append(full[r])
    return counts, means


def _render_efficiency(summary: dict) -> list[str]:
    """Lines of the data-efficiency table of one result: mean ± SD over draws per count and ROI."""
    eff = summary["data_efficiency"]
    rois = list(eff["mean"])
    lines = ["", f"data efficiency: upper-middle mean cc_norm with encoding models fitted on n of the "
                 f"{eff['n_train_stories']} training stories (mean ± SD over {eff['repeats']} draws per n)", "",
             "| stories | " + " | ".join(rois) + " |", "|---|" + "---|" * len(rois)]
    for i, n in enumerate(eff["counts"]):
        lines.append(f"| {n} | " + " | ".join(f"{_fmt(eff['mean'][r][i])} ± {_fmt(eff['sd'][r][i])}" for r in rois)
                     + " |")
    if eff["counts"][-1] != eff["n_train_stories"]:
        um = summary["upper_middle_mean"]
        lines.append(f"| {eff['n_train_stories']} (all) | " + " | ".join(_fmt(um[r]) for r in rois) + " |")
    return lines


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
        lines.append(f"| {_low_level_label(summary)} | " + " | ".join(_fmt(imp[r]) for r in rois) + " |")
    if "data_efficiency" in summary:
        lines += _render_efficiency(summary)
    return "\n".join(lines) + "\n"


def compare(dirs: list[Path], out: Path, labels: list[str] | None = None) -> dict:
    """Side-by-side table (upper-middle mean cc_norm per ROI, % change vs the first) and layer plots; the models
    named by `labels` or else by their folders (`run_utils.result_labels`)."""
    from plotting import plot_layer_curves
    summaries = [read_result_json(d, "summary.json", "brain_evaluate.py", ("per_layer", "upper_middle_mean"),
                                  number_maps=("upper_middle_mean", "upper_middle_low_level_impact"),
                                  objects=("per_layer",)) for d in dirs]
    _check_one_subject_and_test(dirs, summaries)
    names = result_labels(dirs, labels)
    rois = [r for r in summaries[0]["upper_middle_mean"] if all(r in s["upper_middle_mean"] for s in summaries)]
    ref = summaries[0]["upper_middle_mean"]
    table = {"models": names, "rois": rois, "upper_middle_cc_norm": {}, "change_vs_first_pct": {}}
    lines = ["| model | " + " | ".join(f"{r} cc_norm | Δ% " for r in rois) + " |",
             "|---|" + "---|---|" * len(rois)]
    for name, s in zip(names, summaries):
        vals = s["upper_middle_mean"]
        table["upper_middle_cc_norm"][name] = {r: vals[r] for r in rois}
        table["change_vs_first_pct"][name] = {r: relative_change(vals[r], ref[r]) for r in rois}
        cells = [f"{_fmt(vals[r])} | {signed_change(relative_change(vals[r], ref[r]))}" for r in rois]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table["upper_middle_layers"] = {n: s.get("upper_middle_layers") for n, s in zip(names, summaries)}
    if (note := upper_middle_mismatch_note(table["upper_middle_layers"])) is not None:
        lines += ["", note]
    if all("upper_middle_low_level_impact" in s for s in summaries):
        _check_same_low_level_measure(dirs, summaries)
        label = _low_level_label(summaries[0])
        lines += ["", "| model | " + " | ".join(f"{r} {label}" for r in rois) + " |", "|---|" + "---|" * len(rois)]
        for name, s in zip(names, summaries):
            lines.append(f"| {name} | " + " | ".join(_fmt(s["upper_middle_low_level_impact"][r]) for r in rois) + " |")
        table["low_level_impact_pct"] = {n: s["upper_middle_low_level_impact"] for n, s in zip(names, summaries)}
        table["low_level_groups"] = list(low_level_groups(summaries[0]))
    elif with_low := [n for n, s in zip(names, summaries) if "upper_middle_low_level_impact" in s]:
        without = [n for n in names if n not in with_low]
        lines += ["", f"No low-level impact table: evaluated with --low-level {', '.join(with_low)}; without it "
                      f"{', '.join(without)}."]
    boot = bootstrap_changes(dirs, names, summaries, rois)
    if boot.get("rois"):
        table["bootstrap"] = boot
        lines += _render_bootstrap(boot, names)
    elif boot:
        table["bootstrap"] = boot
        lines += ["", f"No bootstrap intervals: {boot['skipped']}."]
    efficiency = compare_efficiency(names, summaries, rois)
    if efficiency:
        table["data_efficiency"] = efficiency
    if "note" in efficiency:
        lines += ["", efficiency["note"]]
    elif efficiency:
        lines += _render_stories_to_match(efficiency, names, rois)
    cc = voxel_cc_norm(dirs, summaries)
    if cc is not None:
        voxel_rois = {"all": np.arange(cc.shape[1]), **_named_roi_voxels(dirs)}
        above = voxels_above_first(cc, voxel_rois)
        table["voxels_above_first_pct"] = {names[k]: v for k, v in above.items()}
        lines += _render_voxels_above(table["voxels_above_first_pct"], names[0], list(voxel_rois))
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    if cc is not None:
        from plotting import plot_voxel_scatter
        save_npz_atomic(out / "voxel_cc_norm.npz", cc_norm=cc.astype(np.float32), models=np.array(names))
        if len(names) > 1:
            plot_voxel_scatter(cc[0], {n: cc[k] for k, n in enumerate(names) if k},
                               {r: i for r, i in voxel_rois.items() if r != "all"}, out / "voxel_scatter.png",
                               f"{names[0]} cc_norm (upper-middle layers)")
    write_text_atomic(out / "comparison.md", text)
    write_json_atomic(out / "comparison.json", table)
    layers = sorted({int(l) for s in summaries for l in s["per_layer"]})  # a layer some model lacks: a gap in its curve
    curves = {r: {n: [s["per_layer"].get(str(l), {}).get("rois", {}).get(r, {}).get("cc_norm", np.nan) for l in layers]
                  for n, s in zip(names, summaries)} for r in rois}
    plot_layer_curves(curves, layers, out / "alignment_by_layer.png", "mean cc_norm",
                      highlight=summaries[0].get("upper_middle_layers"))
    if efficiency and "note" not in efficiency:
        plot_layer_curves({r: {n: efficiency["curves"][n][r] for n in names} for r in rois}, efficiency["counts"],
                          out / "data_efficiency.png", "mean cc_norm (upper-middle layers)",
                          xlabel="encoding-model training stories", log_x=True)
    print(text)
    return table


def _render_bootstrap(boot: dict, names: list[str]) -> list[str]:
    """Lines of the bootstrap tables of `bootstrap_changes`: 95% intervals of each model's Δ% vs the first (and of
    its low-level impact difference, in points)."""
    rois = boot["rois"]
    lines = ["", f"95% intervals, moving-block bootstrap of the test story's TRs ({boot['block_trs']}-TR blocks, "
             f"{boot['n_boot']} samples, the same for every model):", "",
             "| model | " + " | ".join(f"{r} Δ% vs {names[0]}" for r in rois) + " |", "|---|" + "---|" * len(rois)]
    for name in names[1:]:
        ci = boot["change_vs_first_pct_ci95"][name]
        cells = [f"{signed_change(ci[r][0])} to {signed_change(ci[r][1])}" for r in rois]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "low_level_impact_difference_ci95" in boot:
        lines += ["", "| model | " + " | ".join(f"{r} low-level impact, points vs {names[0]}" for r in rois) + " |",
                  "|---|" + "---|" * len(rois)]
        for name in names[1:]:
            pair = f"{name} - {names[0]}"
            ci = boot["low_level_impact_difference_ci95"][pair]
            undefined = boot["low_level_impact_undefined_samples"][pair]  # written beside each interval
            lines.append(f"| {name} | " + " | ".join(
                f"{signed_change(ci[r][0])} to {signed_change(ci[r][1])}" if np.isfinite(ci[r][0]) else
                f"undefined in {undefined[r]} of {boot['n_boot']} samples (full alignment not positive)"
                for r in rois) + " |")
    return lines


def _render_stories_to_match(efficiency: dict, names: list[str], rois: list[str]) -> list[str]:
    """Lines of the table of `compare_efficiency`: the training stories each model needs to match the first
    model's full-data alignment."""
    n_all = efficiency["n_train_stories"]
    lines = ["", f"Training stories each model needs for the alignment {names[0]} reaches with all {n_all} "
                 f"(interpolated in log(stories) between the mean curves; 'never': not within them; "
                 f"× fewer = {n_all} / stories):", "",
             "| model | " + " | ".join(f"{r} stories | × fewer" for r in rois) + " |", "|---|" + "---|---|" * len(rois)]
    for name in names:
        m = efficiency["stories_to_match"][name]
        lines.append(f"| {name} | " + " | ".join(
            "never | –" if not np.isfinite(m[r]) else f"{m[r]:.1f} | {n_all / m[r]:.1f}" for r in rois) + " |")
    return lines


def _render_voxels_above(above: dict[str, dict], first: str, rois: list[str]) -> list[str]:
    """Lines of the table of `voxels_above_first` (model name -> ROI -> {"pct", "n_voxels"})."""
    lines = ["", f"Voxels where a model's cc_norm (upper-middle layers) is above {first}'s, among those above "
                 f"the floor in both (% of n; per-voxel values in voxel_cc_norm.npz, plotted in voxel_scatter.png):",
             "", "| model | " + " | ".join(f"{r} % (n)" for r in rois) + " |", "|---|" + "---|" * len(rois)]
    for name, v in above.items():
        lines.append(f"| {name} | " + " | ".join(f"{_fmt_pct(v[r]['pct'])} ({v[r]['n_voxels']})" for r in rois) + " |")
    return lines


def compare_efficiency(names: list[str], summaries: list[dict], rois: list[str]) -> dict:
    """Data-efficiency curves of results evaluated with the same --data-efficiency draws, and the training stories
    each model needs to reach the first model's full-data alignment (`alignment.stories_to_match`).
    {} when no result has a curve; {"note": why} when they cannot be compared."""
    effs = [s.get("data_efficiency") for s in summaries]
    if not any(effs):
        return {}
    if not all(effs):
        return {"note": "No data-efficiency comparison: not every folder was evaluated with --data-efficiency."}
    draws = [[(d["n"], d["stories"]) for d in e["draws"]] for e in effs]
    if any(d != draws[0] for d in draws) or len({e["n_train_stories"] for e in effs}) > 1:
        return {"note": "No data-efficiency comparison: the folders drew different training stories "
                        "(other --data-efficiency counts, repeats, --seed or training stories)."}
    per_model = [efficiency_curve(e, s["upper_middle_mean"]) for e, s in zip(effs, summaries)]
    counts = per_model[0][0]  # the same draws: the same counts for every model
    curves = {n: means for n, (_, means) in zip(names, per_model)}
    target = summaries[0]["upper_middle_mean"]
    return {"counts": counts, "n_train_stories": effs[0]["n_train_stories"], "reference": names[0],
            "curves": curves, "stories_to_match": {n: {r: stories_to_match(counts, curves[n][r], target[r]) for r in rois}
                                                   for n in names}}


def read_result_arrays(path: Path, wanted=None) -> dict[str, np.ndarray]:
    """The arrays of a result folder's .npz (only those it holds of `wanted`, a tuple of keys or a test of a key,
    where given: the others are never read).

    Raises FileNotFoundError (missing) or ValueError (damaged: truncated, not an .npz), naming the file.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            keep = wanted if callable(wanted) else (lambda k: wanted is None or k in wanted)
            return {k: z[k] for k in z.files if keep(k)}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing from its result folder") from None
    except NPY_READ_ERRORS as err:
        raise ValueError(f"{path}: damaged result arrays ({type(err).__name__}: {err}); evaluate the model again") \
            from None


def bootstrap_changes(dirs: list[Path], names: list[str], summaries: list[dict], rois: list[str],
                      block_trs: int = 10, n_boot: int = 1000, seed: int = 0) -> dict:
    """95% intervals of each model's upper-middle ROI cc_norm change vs the first model, and of every pairwise
    difference, from a paired moving-block bootstrap of the test TRs (`alignment.block_bootstrap_weights`); where
    every folder kept the predictions from its low-level residuals (--low-level), also of every pairwise difference
    of the low-level impact (percentage points) and the share of samples where the first of the pair is above.

    Needs the test predictions `brain_evaluate.py` keeps for ROI voxels (test_responses_roi.npz and the
    upper-middle layer files); returns {"skipped": why} when a folder lacks them or the folders' test data differ.
    """
    from alignment import block_bootstrap_weights, bootstrap_low_level_impact, bootstrap_roi_cc_norm
    files = [Path(d) / "test_responses_roi.npz" for d in dirs]
    if not all(f.is_file() for f in files):
        return {"skipped": "a folder has no test_responses_roi.npz (evaluated without --roi-file, or before it existed)"}
    test = [read_result_arrays(f) for f in files]
    if not all(t.keys() == test[0].keys() and all(np.array_equal(t[k], test[0][k]) for k in t) for t in test):
        return {"skipped": "the folders were evaluated on different voxels, responses or noise ceilings"}
    preds, residual = [], []  # residual: predictions from the low-level residuals (--low-level), where kept
    for d, s in zip(dirs, summaries):
        per_layer, per_layer_residual = [], []
        for l in s["upper_middle_layers"]:
            wanted = ("test_predictions_roi", "test_predictions_roi_residual")
            z = read_result_arrays(Path(d) / f"layer_{l}.npz", wanted)
            if "test_predictions_roi" not in z:
                return {"skipped": f"{d}/layer_{l}.npz holds no test predictions"}
            per_layer.append(z["test_predictions_roi"])
            if "test_predictions_roi_residual" in z:
                per_layer_residual.append(z["test_predictions_roi_residual"])
        preds.append(per_layer)
        residual.append(per_layer_residual if len(per_layer_residual) == len(per_layer) else None)
    with_impact = all(r is not None for r in residual)
    t0 = test[0]
    weights = block_bootstrap_weights(len(t0["responses"]), block_trs, n_boot, seed)
    out = {"block_trs": block_trs, "n_boot": n_boot, "seed": seed, "rois": [], "change_vs_first_pct_ci95": {},
           "difference_ci95": {}, "share_of_samples_above": {}}
    for roi in rois:
        if f"roi/{roi}" not in t0:
            continue
        cols = t0[f"roi/{roi}"]

        def per_layer_samples(predictions):  # per model (its own upper-middle layers, n_boot): the same samples
            return [np.array([bootstrap_roi_cc_norm([[p_l[:, cols]]], t0["responses"][:, cols], t0["cc_max"][cols],
                                                    weights, summaries[0]["nc_floor"])[:, 0] for p_l in p])
                    for p in predictions]
        full = per_layer_samples(preds)
        samples = np.stack([f.mean(axis=0) for f in full], axis=1)  # (n_boot, n_models): the mean over its layers
        out["rois"].append(roi)
        change = 100.0 * (samples - samples[:, :1]) / np.abs(samples[:, :1])
        for k, name in enumerate(names):
            out["change_vs_first_pct_ci95"].setdefault(name, {})[roi] = _interval(change[:, k])
            for j in range(k):
                pair = f"{name} - {names[j]}"
                diff = samples[:, k] - samples[:, j]
                out["difference_ci95"].setdefault(pair, {})[roi] = _interval(diff)
                out["share_of_samples_above"].setdefault(pair, {})[roi] = float(np.mean(diff > 0))
        if with_impact:  # the low-level impact's differences in percentage points, on the same samples
            impact = np.stack([bootstrap_low_level_impact(f[:, :, None], r[:, :, None])[:, 0]
                               for f, r in zip(full, per_layer_samples(residual))], axis=1)
            for k, name in enumerate(names):
                for j in range(k):
                    pair, diff = f"{name} - {names[j]}", impact[:, k] - impact[:, j]
                    # a sample whose full alignment is not positive leaves the impact undefined; an interval over
                    # the other samples would be conditioned on the alignment, so then none is given
                    undefined = int(np.sum(~np.isfinite(diff)))
                    out.setdefault("low_level_impact_undefined_samples", {}).setdefault(pair, {})[roi] = undefined
                    out.setdefault("low_level_impact_difference_ci95", {}).setdefault(pair, {})[roi] = \
                        [float("nan")] * 2 if undefined else _interval(diff)
                    out.setdefault("low_level_impact_share_of_samples_above", {}).setdefault(pair, {})[roi] = \
                        float("nan") if undefined else float(np.mean(diff > 0))
    return out


def voxel_cc_norm(dirs: list[Path], summaries: list[dict]) -> np.ndarray | None:
    """(n_models, V) per-voxel cc_norm, the mean over each result's upper-middle layers (NaN where the voxel's
    cc_max is under the floor); None when a result names no upper-middle layer. Raises FileNotFoundError or
    ValueError naming a layer file that is missing, damaged or of another voxel count."""
    out, first = [], None  # first: the first layer file read, whose voxel count every other must have
    for d, s in zip(dirs, summaries):
        layers = s.get("upper_middle_layers") or []
        if not layers:
            return None
        per_layer = []
        for l in layers:
            path = Path(d) / f"layer_{l}.npz"
            z = read_result_arrays(path, ("cc_norm",))
            if "cc_norm" not in z or z["cc_norm"].ndim != 1:
                raise ValueError(f"{path}: expected a (voxels,) 'cc_norm' array as brain_evaluate.py writes it; "
                                 f"found {sorted(z) or 'none'}")
            first = first or (path, len(z["cc_norm"]))
            if len(z["cc_norm"]) != first[1]:
                raise ValueError(f"{path}: {len(z['cc_norm'])} voxels, expected {first[1]} like {first[0]}")
            per_layer.append(z["cc_norm"].astype(np.float64))
        stacked = np.array(per_layer)
        with np.errstate(invalid="ignore"):  # a voxel under the floor is NaN in every layer: NaN, not a warning
            mean = np.where(np.isfinite(stacked).any(0), np.nansum(stacked, 0) / np.isfinite(stacked).sum(0), np.nan)
        out.append(mean)
    return np.array(out)


def _named_roi_voxels(dirs: list[Path]) -> dict[str, np.ndarray]:
    """{roi: voxel indices} of the named ROIs the results kept test data for (test_responses_roi.npz), where every
    folder kept the same ones; {} otherwise (evaluated without --roi-file, or with other ROI files)."""
    files = [Path(d) / "test_responses_roi.npz" for d in dirs]
    if not all(f.is_file() for f in files):
        return {}
    kept = []
    for f in files:  # the ROI index arrays only: the test responses are the bootstrap's to read
        z = read_result_arrays(f, lambda k: k == "roi_voxels" or k.startswith("roi/"))
        if "roi_voxels" not in z:
            return {}
        kept.append({k[4:]: z["roi_voxels"][z[k]] for k in z if k.startswith("roi/")})
    same = all(k.keys() == kept[0].keys() and all(np.array_equal(k[r], kept[0][r]) for r in k) for k in kept)
    return kept[0] if same else {}


def _fmt_pct(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.0f}"


def voxels_above_first(cc: np.ndarray, rois: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per later model (row k > 0 of `cc`, (n_models, V)) and ROI: the percentage of the ROI's voxels, among those
    with a cc_norm for both (above the floor), where the model's is above the first model's, and their count."""
    out = {}
    for k in range(1, len(cc)):
        for roi, idx in rois.items():
            a, b = cc[0, idx], cc[k, idx]
            both = np.isfinite(a) & np.isfinite(b)
            out.setdefault(k, {})[roi] = {"pct": float(100.0 * np.mean(b[both] > a[both])) if both.any() else float("nan"),
                                          "n_voxels": int(both.sum())}
    return out


def compare_subjects(groups: list[list[Path]], out: Path, labels: list[str] | None = None) -> dict:
    """The same models across subjects (SPEC-methods.md §3.7): per model and ROI, the upper-middle mean cc_norm
    as mean ± SEM over subjects, each subject's change vs the first model (mean ± SEM), and a Wilcoxon
    signed-rank test of each model against the first, paired by subject. A subject without a value for an ROI (no
    voxel above the noise-ceiling floor: NaN) is left out of that ROI's mean and of its pairs.

    groups : one list of `brain_evaluate.py` result folders per subject, the models in the same order in each
        (first = reference), e.g. [[UTS01/pretrained, UTS01/tuned], [UTS02/pretrained, UTS02/tuned], ...].
    labels : model names (default: the first subject's folder names).
    Writes OUT/group.json, group.md and group_by_roi.png. Raises ValueError (naming the folder) when a subject's
    folders hold different subjects, a subject comes twice, the lists differ in length, or a position holds
    different model families; FileNotFoundError when a folder is not a finished result.
    """
    from plotting import plot_bars
    if len(groups) < 2:
        raise ValueError(f"--subject-results: a comparison across subjects needs at least 2 subjects; found {len(groups)}")
    sizes = sorted({len(g) for g in groups})
    if sizes != [len(groups[0])] or sizes[0] < 2:
        raise ValueError("--subject-results: every subject needs the same number (>= 2) of result folders, one per "
                         f"model in the same order; found {[len(g) for g in groups]}")
    summaries = [[read_result_json(d, "summary.json", "brain_evaluate.py", ("subject", "model_type", "upper_middle_mean"),
                                   number_maps=("upper_middle_mean", "upper_middle_low_level_impact")) for d in g]
                 for g in groups]
    subjects = []
    for g, ss in zip(groups, summaries):
        for d, s in zip(g, ss):
            if s["subject"] != ss[0]["subject"]:
                raise ValueError(f"{d}: subject {s['subject']}, expected {ss[0]['subject']} like {g[0]} (one subject "
                                 "per --subject-results)")
        if ss[0]["subject"] in subjects:
            raise ValueError(f"{g[0]}: subject {ss[0]['subject']} given twice")
        subjects.append(ss[0]["subject"])
        _check_one_subject_and_test(g, ss)
    for k in range(len(groups[0])):
        for g, ss in zip(groups, summaries):
            if ss[k]["model_type"] != summaries[0][k]["model_type"]:
                raise ValueError(f"{g[k]}: a {ss[k]['model_type']} model at position {k + 1}, expected "
                                 f"{summaries[0][k]['model_type']} like {groups[0][k]}")
        _check_subjects_alike([g[k] for g in groups], [ss[k] for ss in summaries])  # each model's folders alike
    names = result_labels(groups[0], labels)
    rois = [r for r in summaries[0][0]["upper_middle_mean"] if all(r in s["upper_middle_mean"] for ss in summaries for s in ss)]
    values = {name: {roi: [ss[k]["upper_middle_mean"][roi] for ss in summaries] for roi in rois}
              for k, name in enumerate(names)}
    table = {"models": names, "subjects": subjects, "rois": rois,
             "folders": {subj: [str(d) for d in g] for subj, g in zip(subjects, groups)},
             "upper_middle_cc_norm": {n: {r: _across(values[n][r], subjects) for r in rois} for n in names},
             "change_vs_first_pct": {}, "wilcoxon_vs_first": {}}
    for name in names[1:]:
        table["change_vs_first_pct"][name] = {r: _across([relative_change(v, ref) for v, ref in
                                                          zip(values[name][r], values[names[0]][r])], subjects)
                                              for r in rois}
        table["wilcoxon_vs_first"][name] = {r: _wilcoxon(values[name][r], values[names[0]][r],
                                                         ("n", "min_p_value", "statistic", "p_value")) for r in rois}
    if all("upper_middle_low_level_impact" in s for ss in summaries for s in ss):
        _check_same_low_level_measure([d for g in groups for d in g], [s for ss in summaries for s in ss])
        impact = {name: {r: [ss[k]["upper_middle_low_level_impact"].get(r, float("nan")) for ss in summaries]
                         for r in rois} for k, name in enumerate(names)}
        # undefined (NaN) where a subject's full alignment is not positive: the mean is over the others, counted
        table["low_level_impact_pct"] = {n: {r: {**_across(impact[n][r], subjects),
                                                 "n_defined": int(np.isfinite(impact[n][r]).sum())}
                                             for r in rois} for n in names}
        table["low_level_groups"] = list(low_level_groups(summaries[0][0]))
        for name in names[1:]:
            for r in rois:
                table["low_level_impact_pct"][name][r]["wilcoxon_vs_first"] = _wilcoxon(
                    impact[name][r], impact[names[0]][r], ("n", "statistic", "p_value"))
    # a subject evaluated with a model tuned on others (results since 2026-12-07 record whom): a transfer, not its own
    table["cross_subject"] = {name: other for k, name in enumerate(names)
                              if (other := {subj: ss[k]["tuned_subjects"] for subj, ss in zip(subjects, summaries)
                                            if ss[k].get("tuned_subjects") and subj not in ss[k]["tuned_subjects"]})}
    efficiency = [compare_efficiency(names, ss, rois) for ss in summaries]  # within each subject: the same draws
    if all(e and "note" not in e for e in efficiency):
        table["stories_to_match"] = {n: {r: _across([e["stories_to_match"][n][r] for e in efficiency], subjects)
                                         for r in rois} for n in names}
    text = _render_subjects(table)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "group.md", text)
    write_json_atomic(out / "group.json", table)
    cc = table["upper_middle_cc_norm"]
    plot_bars({roi: {n: cc[n][roi]["mean"] for n in names} for roi in rois}, out / "group_by_roi.png",
              "upper-middle mean cc_norm", title=f"{len(subjects)} subjects: mean ± SEM, lines = subjects",
              errors={roi: {n: cc[n][roi]["sem"] for n in names} for roi in rois},
              points={roi: {n: list(cc[n][roi]["per_subject"].values()) for n in names} for roi in rois})
    print(text)
    return table


def _across(values: list[float], subjects: list[str]) -> dict:
    """One value per subject -> {"per_subject": {subject: value}, "mean", "sem"} (alignment.mean_sem)."""
    m, sem = mean_sem(values)
    return {"per_subject": dict(zip(subjects, values)), "mean": m, "sem": sem}


def _wilcoxon(values: list[float], reference: list[float], keys: tuple[str, ...]) -> dict:
    w = wilcoxon_compare(values, reference)
    return {k: w[k] for k in keys if k in w}


def _render_subjects(table: dict) -> str:
    names, rois, subjects = table["models"], table["rois"], table["subjects"]
    cc, change, test = table["upper_middle_cc_norm"], table["change_vs_first_pct"], table["wilcoxon_vs_first"]
    lines = [f"### {len(subjects)} subjects ({', '.join(subjects)}): upper-middle mean cc_norm, mean ± SEM", "",
             "| model | " + " | ".join(rois) + " |", "|---|" + "---|" * len(rois)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{_fmt(cc[name][r]['mean'])} ± {_fmt(cc[name][r]['sem'])}"
                                                 for r in rois) + " |")
    lines += ["", f"Change vs {names[0]} per subject (Δ%, mean ± SEM) and Wilcoxon signed-rank p (paired by subject):",
              "", "| model | " + " | ".join(f"{r} Δ% | {r} p" for r in rois) + " |", "|---|" + "---|---|" * len(rois)]
    for name in names[1:]:
        cells = []
        for r in rois:
            c, w = change[name][r], test[name][r]
            p = f"{w['p_value']:.3g}" if "p_value" in w else "n/a"
            cells.append(f"{signed_change(c['mean'])} ± {c['sem']:.1f} | {p} (n={w['n']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "low_level_impact_pct" in table:
        low = table["low_level_impact_pct"]
        lines += ["", "Low-level impact % (mean ± SEM over the subjects where it is defined, how many in brackets where "
                      "not all: undefined where the full alignment is not positive; Wilcoxon p vs the first model):", "",
                  "| model | " + " | ".join(rois) + " |", "|---|" + "---|" * len(rois)]
        for name in names:
            cells = []
            for r in rois:
                e = low[name][r]
                w = e.get("wilcoxon_vs_first", {})
                p = f" (p {w['p_value']:.3g})" if "p_value" in w else ""
                some = f" ({e['n_defined']}/{len(subjects)})" if e["n_defined"] < len(subjects) else ""
                cells.append(f"{e['mean']:.1f} ± {e['sem']:.1f}{some}{p}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "stories_to_match" in table:
        match = table["stories_to_match"]
        lines += ["", f"Training stories each model needs for {names[0]}'s full-data alignment (--data-efficiency; "
                      "mean ± SEM over the subjects where it gets there, how many in brackets):", "",
                  "| model | " + " | ".join(rois) + " |", "|---|" + "---|" * len(rois)]
        for name in names:
            cells = []
            for r in rois:
                e = match[name][r]
                reached = sum(np.isfinite(v) for v in e["per_subject"].values())
                cells.append(f"{_fmt(e['mean'])} ± {_fmt(e['sem'])} ({reached}/{len(subjects)})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, other in table["cross_subject"].items():
        at = "; ".join(f"{subj} with a model tuned on {', '.join(tuned)}" for subj, tuned in other.items())
        lines += ["", f"Note: {name} is not each subject's own brain-tuned model: {at} (cross-subject transfer)."]
    n = min(w["n"] for per_roi in test.values() for w in per_roi.values()) if test else 0
    if 0 < n < 6:
        lines += ["", f"With {n} subjects the two-sided signed-rank test cannot go below p = {2 / 2 ** n:.3g}: "
                      "read the per-subject values (group.json) rather than the p-value."]
    lines += ["", "| subject | " + " | ".join(f"{n_} {r}" for n_ in names for r in rois) + " |",
              "|---|" + "---|" * (len(names) * len(rois))]
    for subj in subjects:
        lines.append(f"| {subj} | " + " | ".join(_fmt(cc[n_][r]["per_subject"][subj]) for n_ in names for r in rois) + " |")
    return "\n".join(lines) + "\n"


def _interval(x: np.ndarray) -> list[float]:
    """Central 95% of the bootstrap samples that are defined; NaN, without numpy's warning, where none is (an ROI
    with no voxel above the floor)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).any():
        return [float("nan"), float("nan")]
    return [float(v) for v in np.nanpercentile(x, [2.5, 97.5])]
