"""Linear probes: metrics against hand cases, planted labels learned, shuffled labels at chance, no test in selection."""
import numpy as np
import pytest

import probes


def test_metrics_hand_cases():
    m = probes.probe_metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), "multiclass")
    assert m["accuracy"] == pytest.approx(0.75)
    # per class F1: c0 = 2/3, c1 = 2/3, c2 = 1 -> macro 7/9; micro = accuracy for single-label
    assert m["f1_macro"] == pytest.approx(7 / 9)
    assert m["f1_micro"] == pytest.approx(0.75)
    y = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    p = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    m = probes.probe_metrics(y, p, "multilabel")
    assert m["accuracy"] == pytest.approx(4 / 6)          # correct (utterance, class) decisions
    assert m["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1


def test_frame_labels_presence_and_segment_mean():
    times = np.array([0.01, 0.03, 0.05, 0.07])
    classes = {"a": 0, "b": 1}
    lab = probes.frame_labels(times, [(0.0, 0.04, "a"), (0.04, 0.06, "b")], classes)
    assert lab.tolist() == [0, 0, 1, -1]
    assert probes.presence_matrix([[(0, 1, "b")], []], classes).tolist() == [[0, 1], [0, 0]]
    states = np.arange(8, dtype=float).reshape(1, 4, 2)
    assert probes.segment_mean(times, states, 0.02, 0.06).tolist() == [[3.0, 4.0]]   # frames 1, 2
    assert probes.segment_mean(times, states, 0.071, 0.072).tolist() == [[6.0, 7.0]]  # nearest frame


def test_probe_learns_planted_label_and_shuffled_labels_score_chance():
    rng = np.random.default_rng(0)
    # the same class means in every split
    means = np.random.default_rng(9).normal(0, 1, (4, 16)) * 2.0
    data = {}
    for s, n in (("train", 400), ("val", 100), ("test", 400)):
        y = rng.integers(0, 4, n)
        data[s] = (means[y] + rng.normal(0, 1, (n, 16)), y)
    probe = probes.fit_linear_probe(*data["train"], *data["val"], "multiclass", 4, max_epochs=20)
    acc = probes.probe_metrics(data["test"][1], probe.predict(data["test"][0]), "multiclass")["accuracy"]
    assert acc > 0.85
    shuffled = rng.permutation(data["train"][1])
    probe = probes.fit_linear_probe(data["train"][0], shuffled, data["val"][0], rng.permutation(data["val"][1]),
                                    "multiclass", 4, max_epochs=20)
    acc = probes.probe_metrics(data["test"][1], probe.predict(data["test"][0]), "multiclass")["accuracy"]
    assert acc < 0.4  # chance is 0.25


def test_multilabel_probe_learns_presence():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (12, 5))
    split = {}
    for s, n in (("train", 300), ("val", 100), ("test", 200)):
        y = (rng.random((n, 5)) < 0.4).astype(np.float32)
        split[s] = (y @ w.T * 2 + rng.normal(0, 1, (n, 12)), y)
    probe = probes.fit_linear_probe(*split["train"], *split["val"], "multilabel", 5, max_epochs=30)
    m = probes.probe_metrics(split["test"][1], probe.predict(split["test"][0]), "multilabel")
    assert m["f1_macro"] > 0.8


def test_selection_never_sees_test_labels():
    rng = np.random.default_rng(2)
    means = rng.normal(0, 1, (3, 8))
    feats, labels = {}, {}
    for s, n in (("train", 150), ("val", 60), ("test", 90)):
        y = rng.integers(0, 3, n)
        feats[s], labels[s] = (means[y] + rng.normal(0, 1.5, (n, 8)))[None], y
    a = probes.run_layer_probes(feats, labels, [1], "multiclass", 3, progress=False, max_epochs=15)
    labels_shuffled = dict(labels, test=rng.permutation(labels["test"]))
    feats_noise = dict(feats, test=rng.normal(0, 1, feats["test"].shape))
    b = probes.run_layer_probes(feats_noise, labels_shuffled, [1], "multiclass", 3, progress=False, max_epochs=15)
    assert (a[1]["weight_decay"], a[1]["epochs"], a[1]["val"]) == (b[1]["weight_decay"], b[1]["epochs"], b[1]["val"])
    assert a[1]["test"] != b[1]["test"]


def test_equal_length_batching_matches_one_by_one(tiny_models):
    import models
    backbone, fe, mt = models.load_backbone(tiny_models["wav2vec2"])
    enc = models.SpeechEncoder(backbone, fe, mt)
    rng = np.random.default_rng(3)
    wavs = [rng.normal(0, 0.1, n).astype(np.float32) for n in (8000, 12000, 8000, 12000, 9000)]
    batched = probes.utterance_features(enc, wavs, [1, 2], batch_size=4, progress=False)
    single = np.concatenate([probes.utterance_features(enc, [w], [1, 2], progress=False) for w in wavs], axis=1)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    assert batched.shape == (2, 5, enc.hidden_size)
