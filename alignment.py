"""Encoding-model alignment of layer features with fMRI: design matrices, per-layer fits, ROI summaries.

Arrays in, arrays out (SPEC-methods.md §3–§4). The script `brain_evaluate.py` does the I/O around it.
Conventions: per story, features are Lanczos-downsampled to the TR midpoints, trimmed (train rows [10:-5],
test rows [50:-5]), z-scored per column, stacked over stories, then FIR-delayed by 1–4 TRs.
"""
from __future__ import annotations

import numpy as np

from eval_utils import (DEFAULT_DELAYS, cc_norm, columnwise_correlation, lanczosinterp2d, make_delayed,
                        weighted_columnwise_correlation, zscore)
from ridge import DEFAULT_ALPHAS, bootstrap_ridge
from timing import TRGrid, trim_slice


def story_tr_features(times: np.ndarray, feats: np.ndarray, grid: TRGrid, test: bool) -> np.ndarray:
    """(n, F) features at `times` (s) -> trimmed, z-scored (rows, F) at the story's TRs."""
    at_trs = lanczosinterp2d(feats, times, grid.tr_times)
    return zscore(at_trs[trim_slice(grid.n_tr, test=test)]).astype(np.float32)


def stack_design(per_story: dict[str, np.ndarray], train_stories: list[str], test_story: str,
                 delays=DEFAULT_DELAYS) -> tuple[np.ndarray, np.ndarray]:
    """Delayed design matrices: X_train (Σ train rows, F·D) and X_test (test rows, F·D)."""
    x_train = make_delayed(np.vstack([per_story[s] for s in train_stories]), delays)
    x_test = make_delayed(per_story[test_story], delays)
    return x_train, x_test


def fit_and_score(x_train, y_train, x_test, y_test, cc_max: np.ndarray, nc_floor: float = 0.1,
                  alphas=DEFAULT_ALPHAS, ridge_kwargs: dict | None = None) -> dict:
    """Ridge (per-voxel alpha) on the training TRs, scored on the test story.

    Returns dict with r (V,), cc_norm (V,), alphas (V,), edge_fraction, predictions (test rows, V).
    """
    res = bootstrap_ridge(x_train, y_train, x_test, alphas=alphas, **(ridge_kwargs or {}))
    r = columnwise_correlation(res.predictions, y_test)
    return {"r": r, "cc_norm": cc_norm(r, cc_max, nc_floor), "alphas": res.alphas, "edge_fraction": res.edge_fraction,
            "predictions": res.predictions}


def block_bootstrap_weights(n_rows: int, block_trs: int = 10, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Moving-block bootstrap of the test TRs as row multiplicities (n_boot, n_rows).

    Each sample strings together blocks of `block_trs` consecutive rows from random starts (autocorrelated
    responses: single TRs are not independent) until it has n_rows rows.
    """
    block = max(1, min(block_trs, n_rows))
    n_blocks = -(-n_rows // block)
    starts = np.random.default_rng(seed).integers(0, n_rows - block + 1, size=(n_boot, n_blocks))
    rows = (starts[:, :, None] + np.arange(block)).reshape(n_boot, -1)[:, :n_rows]
    weights = np.zeros((n_boot, n_rows))
    np.add.at(weights, (np.arange(n_boot)[:, None], rows), 1.0)
    return weights


def bootstrap_roi_cc_norm(predictions: list[list[np.ndarray]], responses: np.ndarray, cc_max: np.ndarray,
                          weights: np.ndarray, nc_floor: float = 0.1, voxel_chunk: int = 4096) -> np.ndarray:
    """Mean cc_norm over the voxels of one ROI and over layers, per model and bootstrap sample.

    predictions : per model, per layer, (T, V) test predictions of the ROI's voxels.
    responses : (T, V) test responses; cc_max : (V,); weights : (n_boot, T) from `block_bootstrap_weights`.
    Returns (n_boot, n_models); the same samples for every model, so differences between models are paired.
    """
    ok = np.flatnonzero(np.isfinite(cc_max) & (cc_max > nc_floor))  # the voxels roi_summary averages
    out = np.full((len(weights), len(predictions)), np.nan)
    if not len(ok):
        return out
    chunks = [ok[i:i + voxel_chunk] for i in range(0, len(ok), voxel_chunk)]  # memory: n_boot × voxel_chunk
    for k, layers in enumerate(predictions):
        per_layer = [sum((weighted_columnwise_correlation(p[:, c], responses[:, c], weights) / cc_max[c]).sum(axis=1)
                         for c in chunks) / len(ok) for p in layers]
        out[:, k] = np.mean(per_layer, axis=0)
    return out


def bootstrap_low_level_impact(full: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Low-level impact (%) per bootstrap sample and model, averaged over layers as the summary averages it.

    full, residual : (n_layers, n_boot, n_models) ROI mean cc_norm samples (`bootstrap_roi_cc_norm` per layer) of
    the models' features and of their low-level residuals, on the same samples.
    Returns (n_boot, n_models): `low_level_impact` per layer (NaN where the full one is not positive), then the mean
    over layers by `upper_middle_impact`, as the summary averages them (NaN where any layer's is).
    """
    return upper_middle_impact(low_level_impact(full, residual), axis=0)


def upper_middle_impact(per_layer, axis=None):
    """The mean of per-layer low-level impacts, NaN where any is NaN: an average over only the layers that define
    one would be over other layers than the upper-middle mean it is read beside."""
    return np.mean(np.asarray(per_layer, dtype=float), axis=axis)


# The residual model's grid: down to a near-unpenalised fit (penalty 1e-6), which the held-out rows often favour
RESIDUAL_ALPHAS = np.logspace(-3, 4, 29)
RESIDUAL_SCORE = "r2"  # not "corr": a correlation is blind to how far a fit is shrunk, and so to what it leaves behind


def residualize(model_train: np.ndarray, model_test: np.ndarray, low_train: np.ndarray, low_test: np.ndarray,
                ridge_kwargs: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Regress low-level features out of model features (fit on the training TRs).

    Each model feature's alpha is the one of `RESIDUAL_ALPHAS` with the best held-out R² on the bootstraps of
    `ridge.bootstrap_ridge` (as the paper's code minimises 1 − R²); `ridge_kwargs` set the rest (backend, seed).
    model_* : (TRs, F) z-scored model features; low_* : (TRs, L) z-scored low-level features.
    Returns the z-scored residuals (train (TRs, F), test (TRs, F)).
    """
    kwargs = {**(ridge_kwargs or {}), "alphas": RESIDUAL_ALPHAS, "score": RESIDUAL_SCORE}
    # one refit predicts the training and the test rows (same backend, precision and alphas for both halves)
    res = bootstrap_ridge(low_train, model_train, np.vstack([low_train, low_test]), **kwargs)
    n = len(low_train)
    return zscore(model_train - res.predictions[:n]), zscore(model_test - res.predictions[n:])


def story_subsets(train_stories: list[str], counts: list[int], repeats: int, seed: int = 0) -> list[tuple[int, list[str]]]:
    """(n, stories) for each count n and repeat: n training stories drawn without replacement, in the training
    order (deterministic for a seed; the same draws for every model). A count of all stories is drawn once."""
    rng = np.random.default_rng(seed)
    out = []
    for n in counts:
        if not 1 <= n <= len(train_stories):
            raise ValueError(f"{n} training stories asked for; expected 1..{len(train_stories)}")
        for _ in range(1 if n == len(train_stories) else repeats):
            pick = np.sort(rng.choice(len(train_stories), size=n, replace=False))
            out.append((n, [train_stories[i] for i in pick]))
    return out


def subset_alignment(per_story: dict[str, np.ndarray], y_by_story: dict[str, np.ndarray], stories: list[str],
                     test_story: str, y_test: np.ndarray, cc_max: np.ndarray, rois: dict[str, np.ndarray],
                     nc_floor: float = 0.1, ridge_kwargs: dict | None = None) -> dict[str, float]:
    """ROI mean cc_norm of the encoding model fitted on `stories` only (one layer's (TRs, F) features per story,
    responses (TRs, V) per story), scored on the test story: one point of a data-efficiency curve."""
    x_train, x_test = stack_design(per_story, stories, test_story)
    y_train = np.vstack([y_by_story[s] for s in stories])
    res = fit_and_score(x_train, y_train, x_test, y_test, cc_max, nc_floor, ridge_kwargs=ridge_kwargs)
    return {roi: v["cc_norm"] for roi, v in roi_summary(res, rois).items()}


def stories_to_match(counts: np.ndarray, values: np.ndarray, target: float) -> float:
    """Training stories a model needs to reach `target` alignment: where its curve (mean alignment at each count,
    counts increasing) first reaches it, linearly interpolated in log(count); NaN if it never does.
    A curve above the target at its smallest count gives that count (no extrapolation below it)."""
    counts, values = np.asarray(counts, float), np.asarray(values, float)
    above = np.flatnonzero(values >= target)
    if not len(above) or not np.isfinite(target):
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(counts[0])
    lo, hi = np.log(counts[i - 1]), np.log(counts[i])
    frac = (target - values[i - 1]) / (values[i] - values[i - 1])
    return float(np.exp(lo + frac * (hi - lo)))


def roi_summary(result: dict, rois: dict[str, np.ndarray]) -> dict:
    """Per ROI: mean cc_norm (over voxels with a defined value), mean r, and voxel counts."""
    out = {}
    for name, idx in rois.items():
        ccn = result["cc_norm"][idx]
        out[name] = {"cc_norm": mean_defined(ccn),
                     "r": float(np.mean(result["r"][idx])) if len(idx) else float("nan"),
                     "n_voxels": int(len(idx)), "n_above_floor": int(np.isfinite(ccn).sum())}
    return out


def mean_defined(values) -> float:
    """Mean of the finite values, NaN (without numpy's "Mean of empty slice" warning) where there is none: an ROI
    with no voxel above the noise-ceiling floor."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def undefined_roi_notes(rois: dict[str, np.ndarray], cc_max: np.ndarray, floor: float) -> list[str]:
    """A line per ROI whose cc_norm is NaN in every layer, and why: it holds no voxel, or none has cc_max > floor."""
    notes = []
    for name, idx in rois.items():
        ceiling = np.asarray(cc_max, dtype=np.float64)[idx]
        if len(idx) == 0:
            notes.append(f"note: ROI '{name}' holds no voxel: its summaries are NaN")
        elif not (ceiling > floor).any():  # NaN compares False
            highest = f"max {ceiling[np.isfinite(ceiling)].max():.3f}" if np.isfinite(ceiling).any() else "none finite"
            notes.append(f"note: ROI '{name}': none of its {len(idx)} voxels has a noise ceiling above --nc-floor "
                         f"{floor:g} ({highest}): its cc_norm is NaN, its r is given")
    return notes


def upper_middle_layers(layers: list[int], n_layers: int) -> list[int]:
    """Requested layers in the upper-middle of the network: n/2 < layer <= floor(0.85·n) (12 layers: 7–10); where
    none is, the highest requested layer (`upper_middle_note` says so)."""
    chosen = [l for l in layers if n_layers / 2 < l <= int(np.floor(0.85 * n_layers))]
    return chosen or [max(layers)]


def upper_middle_note(layers: list[int], n_layers: int, name: str) -> str | None:
    """A line for the log where none of the requested `layers` is in `name`'s upper middle, so that its summaries'
    "upper-middle" mean reads another layer; None otherwise."""
    band = upper_middle_layers(list(range(n_layers + 1)), n_layers)  # what every layer requested would give
    if set(upper_middle_layers(layers, n_layers)) <= set(band):
        return None
    return (f"note: --layers {layers} holds none of {name}'s upper-middle layers ({band} of {n_layers}); its "
            f"upper-middle summary reads layer {max(layers)} instead")


def upper_middle_mismatch_note(layer_sets: dict[str, list[int] | None]) -> str | None:
    """A line for a comparison whose models' upper-middle means average different layers (`layer_sets`: model name
    -> its result's upper-middle layers, None where an older result lacks them); None when they agree."""
    known = {name: list(v) for name, v in layer_sets.items() if v is not None}
    if len({tuple(v) for v in known.values()}) <= 1:
        return None
    listed = "; ".join(f"{name} {v}" for name, v in known.items())
    return (f"Note: these upper-middle means average different layers ({listed}), each result's own, from the layers "
            f"it was evaluated at and its model's depth: for models of one depth, evaluate all at the same --layers "
            f"to compare like with like.")


def low_level_impact(full, residual):
    """100·(align_full − align_residual)/align_full (percent of alignment explained by low-level features).

    Floats give a float; arrays give an array, elementwise. NaN where align_full is not positive or not finite:
    an ROI the model does not predict has no alignment to explain (a negative one would also flip the sign).
    """
    full, residual = np.asarray(full, dtype=float), np.asarray(residual, dtype=float)
    ok = np.isfinite(full) & (full > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, 100.0 * (full - residual) / np.where(ok, full, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def relative_change(new: float, reference: float) -> float:
    """Percent change of `new` over `reference`."""
    return float(100.0 * (new - reference) / abs(reference)) if reference and np.isfinite(reference) else float("nan")


def signed_change(x: float) -> str:
    """A change in % or points as a table cell, signed, one decimal; "nan" where undefined (a first value of 0, an
    ROI with no voxel above the floor), not "+nan"."""
    return "nan" if x is None or not np.isfinite(x) else f"{x:+.1f}"


def mean_sem(values) -> tuple[float, float]:
    """Mean and standard error of the mean (ddof 1) of finite `values`; SEM is NaN for fewer than two."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def wilcoxon_compare(tuned: np.ndarray, pretrained: np.ndarray) -> dict:
    """Wilcoxon signed-rank test across subjects (paired values; pairs with a NaN dropped); mean ± SEM of each.

    With n subjects the exact two-sided test cannot go below p = 2/2**n (`min_p_value`): 0.25 for 3 subjects.
    """
    from scipy.stats import wilcoxon
    tuned, pretrained = np.asarray(tuned, float), np.asarray(pretrained, float)
    keep = np.isfinite(tuned) & np.isfinite(pretrained)
    tuned, pretrained = tuned[keep], pretrained[keep]
    (t_mean, t_sem), (p_mean, p_sem) = mean_sem(tuned), mean_sem(pretrained)
    n = int(len(tuned))
    out = {"tuned_mean": t_mean, "tuned_sem": t_sem, "pretrained_mean": p_mean, "pretrained_sem": p_sem, "n": n,
           "min_p_value": 2.0 / 2 ** n if n else float("nan")}
    if n >= 2 and np.any(tuned != pretrained):
        stat, p = wilcoxon(tuned, pretrained)
        out.update(statistic=float(stat), p_value=float(p))
    return out


# SPEC-methods.md §4's low-level feature groups, in column order; the analysis uses all of them unless told otherwise
LOW_LEVEL_GROUPS = ("mel", "articulatory", "diphones", "triphones")


def low_level_features(wav: np.ndarray, phone_labels: list[str], phone_times: np.ndarray,
                       grid: TRGrid, test: bool, n_bands: int = 16, groups=LOW_LEVEL_GROUPS) -> np.ndarray:
    """Low-level features of one story at its TRs (trimmed, z-scored): mel-band energies (n_bands), 22 articulatory
    features, hashed diphones and triphones (64 each) of the phones: (rows, n_bands + 150), or the columns of the
    `groups` asked for (a subset of LOW_LEVEL_GROUPS, kept in that order) to see which groups carry an impact."""
    from low_level import articulatory_features, mel_band_energy, phone_ngram_features
    unknown = sorted(set(groups) - set(LOW_LEVEL_GROUPS))
    if unknown or not groups:
        raise ValueError(f"low-level groups {list(groups)}: expected one or more of {list(LOW_LEVEL_GROUPS)}")
    t_mel, mel = mel_band_energy(wav, 16000, n_bands=n_bands)
    mel_tr = story_tr_features(t_mel, mel - mel.mean(0), grid, test)
    if not len(phone_labels):
        full = np.hstack([mel_tr, np.zeros((len(mel_tr), 22 + 2 * 64))]).astype(np.float32)
    else:
        phones = np.hstack([articulatory_features(phone_labels), phone_ngram_features(phone_labels, 2),
                            phone_ngram_features(phone_labels, 3)])
        full = np.hstack([mel_tr, story_tr_features(phone_times, phones, grid, test)]).astype(np.float32)
    if tuple(groups) == LOW_LEVEL_GROUPS:
        return full
    # every group is z-scored column by column, so a subset is the same columns of the full set
    edges = np.cumsum([0, n_bands, 22, 64, 64])
    return np.hstack([full[:, edges[i]:edges[i + 1]] for i, g in enumerate(LOW_LEVEL_GROUPS) if g in groups])
