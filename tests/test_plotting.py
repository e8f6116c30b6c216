"""Plot helpers: what each figure draws (read back from the matplotlib objects), and atomic PNG writes."""
import numpy as np
import pytest

import plotting


@pytest.fixture
def captured(monkeypatch):
    """The figures the helpers would save, kept open for inspection instead of written."""
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    yield figs
    for fig in figs:
        plotting.plt.close(fig)


def test_layer_curves_share_one_scale_label_it_once_and_shade_the_highlighted_layers(captured):
    curves = {"auditory": {"pre": [0.5, 0.4, 0.3], "tuned": [0.5, 0.45, 0.35]},
              "language": {"pre": [0.1, 0.15, 0.2], "tuned": [0.1, 0.2, 0.3]}}
    plotting.plot_layer_curves(curves, [1, 2, 3], "unused.png", "mean cc_norm", highlight=[2, 3])
    axes = captured[0].axes
    assert [a.get_title() for a in axes] == ["auditory", "language"]
    assert axes[0].get_ylabel() == "mean cc_norm" and axes[1].get_ylabel() == ""
    assert axes[0].get_ylim() == axes[1].get_ylim()  # shared y: 0.1 .. 0.5 visible in both panels
    for ax in axes:
        # one shaded band per highlighted layer, centred on it (its left edge: a Rectangle's or, matplotlib < 3.9, a Polygon's)
        spans = [p.get_patch_transform().transform(p.get_path().vertices)[:, 0].min() for p in ax.patches]
        np.testing.assert_allclose(sorted(spans), [1.6, 2.6])
        np.testing.assert_array_equal(ax.lines[1].get_ydata(), curves[ax.get_title()]["tuned"])
        assert [0, 0] in [list(line.get_ydata()) for line in ax.lines[2:]]  # a line at zero alignment
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["pre", "tuned", "upper-middle"]


def test_layer_curves_of_many_rois_wrap_into_even_rows_of_at_most_four_panels(captured):
    assert [plotting._grid_shape(n) for n in (1, 4, 5, 7, 9, 13)] == [(1, 1), (1, 4), (2, 3), (2, 4), (3, 3), (4, 4)]
    rois = [f"roi{k}" for k in range(6)]  # a subject's pycortex ROIs: one row of them was 24 inches wide
    plotting.plot_layer_curves({r: {"pre": [0.1 * k, 0.2]} for k, r in enumerate(rois)}, [1, 2], "unused.png", "y")
    fig = captured[0]
    assert [a.get_title() for a in fig.axes] == rois
    assert fig.get_size_inches().tolist() == [12.0, 6.4]  # two rows of three, not four and two
    rows = [a.get_subplotspec().rowspan.start for a in fig.axes]
    assert rows == [0, 0, 0, 1, 1, 1]
    assert [a.get_ylabel() for a in fig.axes] == ["y", "", "", "y", "", ""]  # labelled once per row
    assert len({a.get_ylim() for a in fig.axes}) == 1  # one scale throughout


def test_bars_mark_each_referenced_group_across_its_bars_only(captured):
    values = {"commands": {"pre": 0.9, "tuned": 0.95}, "phonemes": {"pre": 0.8, "tuned": 0.85},
              "semantic": {"pre": 0.05, "tuned": 0.1}}
    plotting.plot_bars(values, "unused.png", "F1 macro", references={"commands": 1 / 35, "semantic": 0.125},
                       reference_label="uniform guess")
    ax = captured[0].axes[0]
    segments = [seg for c in ax.collections for seg in c.get_segments()]  # the dashed marks (hlines)
    assert len(segments) == 2  # none over phonemes (group 1), which has no reference
    width = 0.8 / 2
    (x0, y0), (x1, _) = segments[0]
    np.testing.assert_allclose([x0, x1, y0], [0 - width / 2, 0 + 1.5 * width, 1 / 35])
    (x0, y0), (x1, _) = segments[1]
    np.testing.assert_allclose([x0, x1, y0], [2 - width / 2, 2 + 1.5 * width, 0.125])
    assert "uniform guess" in [t.get_text() for t in ax.get_legend().get_texts()]
    heights = sorted(round(b.get_height(), 3) for b in ax.patches)
    assert heights == [0.05, 0.1, 0.8, 0.85, 0.9, 0.95]
    np.testing.assert_allclose(ax.get_xticks(), [0.2, 1.2, 2.2])  # each group's name under the middle of its bars
    assert [t.get_text() for t in ax.get_xticklabels()] == ["commands", "phonemes", "semantic"]


def test_save_writes_the_png_atomically(tmp_path):
    path = tmp_path / "sub" / "plot.png"
    plotting.plot_bars({"g": {"a": 1.0}}, path, "y")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]  # no temporary file left behind


def test_voxel_scatter_draws_one_panel_per_model_and_roi_with_its_voxels_over_all_finite_ones(captured):
    nan = np.nan
    reference = np.array([0.1, 0.2, nan, 0.4, 0.5, 0.6])
    models = {"tuned": np.array([0.2, nan, 0.3, 0.5, 0.4, 0.7]), "control": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])}
    rois = {"language": np.array([0, 1, 3]), "left": np.array([0, 1, 2, 3])}  # overlapping, as hemispheres do
    plotting.plot_voxel_scatter(reference, models, rois, "unused.png", "pre cc_norm")
    axes = np.array(captured[0].axes).reshape(2, 2)  # rows: models; columns: ROIs
    assert [a.get_title() for a in axes[0]] == ["language", "left"]
    assert [a.get_ylabel() for a in axes[:, 0]] == ["tuned cc_norm", "control cc_norm"]
    (every, language), (_, left) = ([c.get_offsets() for c in ax.collections] for ax in axes[0])
    np.testing.assert_allclose(every, [[0.1, 0.2], [0.4, 0.5], [0.5, 0.4], [0.6, 0.7]])  # NaN in either: left out
    np.testing.assert_allclose(language, [[0.1, 0.2], [0.4, 0.5]])  # voxel 1 is NaN for tuned
    np.testing.assert_allclose(left, [[0.1, 0.2], [0.4, 0.5]])  # voxel 2 is NaN for the reference
    assert len(axes[1, 0].collections[1].get_offsets()) == 3  # the control has voxel 1
    for ax in axes.ravel():  # one scale for x and y in every panel, from the smallest to the largest finite value
        assert ax.get_xlim() == ax.get_ylim() == (0.1, 0.7)
        np.testing.assert_allclose(ax.lines[0].get_xydata(), [[0.1, 0.1], [0.7, 0.7]])  # the diagonal
    plotting.plot_voxel_scatter(reference, {"tuned": models["tuned"]}, {}, "unused.png", "pre cc_norm")
    (ax,) = captured[1].axes  # no ROI file: one panel of every voxel
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 4


def test_voxel_scatter_of_many_rois_wraps_each_models_panels_into_even_rows(captured):
    rois = {f"roi{k}": np.array([k]) for k in range(5)}
    models = {"tuned": np.linspace(0, 1, 5), "control": np.linspace(1, 0, 5)}
    plotting.plot_voxel_scatter(np.linspace(0, 1, 5), models, rois, "unused.png", "pre cc_norm")
    fig = captured[0]
    assert [a.get_title() for a in fig.axes] == [*rois, *rois]  # each model's 5 panels; its empty place removed
    assert [a.get_subplotspec().rowspan.start for a in fig.axes] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # 3 + 2 each
    assert [a.get_ylabel() for a in fig.axes] == ["tuned cc_norm", "", "", "tuned cc_norm", "",
                                                  "control cc_norm", "", "", "control cc_norm", ""]
    assert fig.get_size_inches().tolist() == pytest.approx([9.6, 12.8])
    np.testing.assert_allclose(fig.axes[9].collections[1].get_offsets(), [[1.0, 0.0]])  # control's voxel 4 in roi4


def test_loss_curve_draws_train_and_validation_loss_and_validation_r_per_epoch(captured):
    metrics = [{"epoch": 0, "train_loss": np.nan, "val_loss": 1.0, "val_corr": 0.0},
               {"epoch": 1, "train_loss": 0.9, "val_loss": 0.95, "val_corr": 0.1},
               {"epoch": 2, "train_loss": 0.8, "val_loss": 0.97, "val_corr": 0.12}]
    plotting.plot_loss_curve(metrics, "unused.png", title="UTS01")
    loss_ax, r_ax = captured[0].axes
    train, val = loss_ax.lines
    np.testing.assert_array_equal(train.get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(train.get_ydata(), [np.nan, 0.9, 0.8])  # epoch 0: an untrained head, no train loss
    np.testing.assert_array_equal(val.get_ydata(), [1.0, 0.95, 0.97])
    np.testing.assert_array_equal(r_ax.lines[0].get_ydata(), [0.0, 0.1, 0.12])
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train loss", "val loss", "val r"]
    assert loss_ax.get_title() == "UTS01" and r_ax.get_ylabel() == "mean val r"


def test_bars_draw_error_bars_and_each_subject_across_the_models_in_order(captured):
    values = {"language": {"pre": 0.2, "tuned": 0.3}}
    plotting.plot_bars(values, "unused.png", "cc_norm", errors={"language": {"pre": 0.01, "tuned": 0.05}},
                       points={"language": {"pre": [0.1, 0.3], "tuned": [0.4, 0.2]}})
    ax = captured[0].axes[0]
    lengths = sorted(round(float(np.ptp(seg[:, 1])), 3) for c in ax.collections for seg in c.get_segments())
    assert lengths == [0.02, 0.1]  # error bars of ±0.01 and ±0.05
    subjects = [line for line in ax.lines if line.get_marker() == "o"]
    # one line per subject, from its value under the first model to its value under the second
    np.testing.assert_allclose(np.stack([line.get_ydata() for line in subjects], axis=1), [[0.1, 0.3], [0.4, 0.2]])
    np.testing.assert_allclose(subjects[0].get_xdata(), [0.0, 0.4])


def test_layer_curves_on_a_log_axis_keep_ticks_at_the_counts(captured):
    plotting.plot_layer_curves({"all": {"pre": [0.1, 0.2, 0.25]}}, [1, 4, 16], "unused.png", "mean cc_norm",
                               xlabel="encoding-model training stories", log_x=True)
    (ax,) = captured[0].axes
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"]
    assert len(ax.xaxis.get_minorticklocs()) == 0  # no unlabelled log ticks between the counts
    assert ax.get_xlabel() == "encoding-model training stories"
