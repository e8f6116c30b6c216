"""PNG plots of runs and results (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from atomic_io import unique_temp_path, writing  # noqa: E402


def _save(fig, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temp_path(path)  # keeps the .png suffix, from which matplotlib takes the format
    try:
        with writing(path):
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
            tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def plot_loss_curve(metrics: list[dict], path, title: str = "brain-tuning") -> None:
    """Train and validation loss per epoch, validation correlation on a second axis."""
    epochs = [m["epoch"] for m in metrics]  # epoch 0 = untrained head (no train loss)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train loss")
    ax.plot(epochs, [m["val_loss"] for m in metrics], "s-", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [m["val_corr"] for m in metrics], "^--", color="tab:green", label="val r")
    ax2.set_ylabel("mean val r")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=8, loc="best")
    ax.set_title(title)
    _save(fig, path)


PANELS_PER_ROW = 4


def _grid_shape(n_panels: int) -> tuple[int, int]:
    """(rows, columns) for `n_panels` panels: as few rows as PANELS_PER_ROW allows, filled evenly (5 panels: 3 + 2,
    not 4 + 1)."""
    n_rows = -(-n_panels // PANELS_PER_ROW)
    return n_rows, -(-n_panels // n_rows)


def plot_layer_curves(curves: dict[str, dict[str, list[float]]], layers: list[int], path, ylabel: str,
                      title: str = "", highlight: list[int] | None = None, xlabel: str = "layer",
                      log_x: bool = False) -> None:
    """One panel per ROI, one line per model: `curves[roi][model]` = values per layer (or per other x, named by
    `xlabel`, e.g. training stories); the layers in `highlight` (e.g. the upper-middle ones the summaries
    average) shaded; `log_x`: a log-scaled x axis (amounts of data), ticks still at `layers`."""
    rois = list(curves)
    # one y scale for all panels, labelled once per row: ROIs compare at a glance and labels do not overlap panels;
    # at most PANELS_PER_ROW side by side (a subject's pycortex ROIs made one figure tens of panels wide)
    n_rows, n_cols = _grid_shape(len(rois))
    fig, grid = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 3.2 * n_rows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax in grid.flat[len(rois):]:  # the last row's empty places
        ax.remove()
    for ax, roi in zip(grid.flat, rois):
        for model, values in curves[roi].items():
            ax.plot(layers, values, "o-", label=model)
        ax.set_title(roi)
        ax.set_xlabel(xlabel)
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(layers, [str(x) for x in layers])
        ax.axhline(0, color="grey", lw=0.5)
        for n, layer in enumerate(highlight or []):
            ax.axvspan(layer - 0.4, layer + 0.4, color="grey", alpha=0.15, lw=0,
                       label="upper-middle" if n == 0 else None)
    for row in grid:
        row[0].set_ylabel(ylabel)
    grid[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_bars(values: dict[str, dict[str, float]], path, ylabel: str, title: str = "",
              errors: dict[str, dict[str, float]] | None = None,
              points: dict[str, dict[str, list[float]]] | None = None,
              references: dict[str, float] | None = None, reference_label: str = "chance") -> None:
    """Grouped bars: `values[group][model]`; optional error bars `errors[group][model]`, individual values
    (e.g. subjects, in the same order for every model) as dots joined across the models, `points[group][model]`,
    and a dashed mark across a group's bars at `references[group]` (e.g. its chance level)."""
    import numpy as np
    groups = list(values)
    models = list(next(iter(values.values())))
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(groups)), 3.2))
    for i, m in enumerate(models):
        yerr = [errors[g].get(m, np.nan) for g in groups] if errors else None
        ax.bar(x + i * width, [values[g].get(m, np.nan) for g in groups], width, yerr=yerr, capsize=3, label=m)
    for j, g in enumerate(groups if points else []):  # one line per individual (subject) across the models
        ys = np.array([points[g].get(m, []) for m in models], float)
        ax.plot(x[j] + width * np.arange(len(models)), ys, "o-", color="black", lw=0.6, ms=3)
    marked = [j for j, g in enumerate(groups) if references and g in references]
    for n, j in enumerate(marked):
        ax.hlines(references[groups[j]], x[j] - width / 2, x[j] + width * (len(models) - 0.5), colors="black",
                  linestyles="--", lw=1, label=reference_label if n == 0 else None)
    ax.set_xticks(x + width * (len(models) - 1) / 2, groups, rotation=20)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_voxel_scatter(reference, models: dict, rois: dict, path, xlabel: str) -> None:
    """Each voxel's value under a model (y) against the reference model's (x): one row per model, one panel per ROI
    (name -> voxel indices; ROIs may overlap, e.g. hemispheres and functional areas), its voxels coloured over all
    voxels in grey, the diagonal drawn, one scale everywhere; NaN voxels left out. No ROI: one panel of all voxels.
    More than PANELS_PER_ROW ROIs: each model's panels take several rows.
    reference : (V,); models : {name: (V,)}."""
    import numpy as np
    reference = np.asarray(reference, float)
    models = {name: np.asarray(y, float) for name, y in models.items()}
    panels = list(rois) or [None]
    rows_per_model, n_cols = _grid_shape(len(panels))  # each model's ROI panels in rows of at most PANELS_PER_ROW
    fig, grid = plt.subplots(len(models) * rows_per_model, n_cols, figsize=(3.2 * n_cols, 3.2 * len(models)
                             * rows_per_model), squeeze=False, layout="constrained")
    finite = np.concatenate([v[np.isfinite(v)] for v in (reference, *models.values())])
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    for m, (name, y) in enumerate(models.items()):
        ok = np.isfinite(reference) & np.isfinite(y)
        row = grid[m * rows_per_model:(m + 1) * rows_per_model].ravel()
        for ax in row[len(panels):]:  # the model's last row's empty places
            ax.remove()
        for k, (ax, roi) in enumerate(zip(row, panels)):
            ax.scatter(reference[ok], y[ok], s=3, color="lightgrey", lw=0, rasterized=True, label="all voxels")
            if roi is not None:
                idx = np.asarray(rois[roi])
                idx = idx[ok[idx]]
                ax.scatter(reference[idx], y[idx], s=4, lw=0, color=f"C{k}", rasterized=True, label=roi)
                ax.set_title(roi)
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            ax.set_xlabel(xlabel)
            if k % n_cols == 0:
                ax.set_ylabel(f"{name} cc_norm")
    _save(fig, path)
