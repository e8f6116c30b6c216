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
    none = np.zeros((2, 3), np.float32)  # nothing true, nothing predicted: F1 0 (sklearn's zero_division=0)
    assert probes.probe_metrics(none, none, "multilabel") == {"f1_macro": 0.0, "f1_micro": 0.0, "accuracy": 1.0}


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_sklearn(seed):
    """The numpy metrics against sklearn's (zero_division=0), with classes only predicted or only true."""
    from sklearn.metrics import accuracy_score, f1_score
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 7, 50), rng.integers(0, 9, 50)   # classes 7, 8 only predicted
    y[:5] = 11                                                # class 11 only true
    m = probes.probe_metrics(y, p, "multiclass")
    assert m["f1_macro"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-12)
    assert m["f1_micro"] == pytest.approx(f1_score(y, p, average="micro", zero_division=0), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    y = (rng.random((40, 12)) < 0.2).astype(np.float32)
    y[:, 3] = 0                                               # a class absent from this split: not in the macro
    p = (rng.random((40, 12)) < 0.3).astype(np.float32)
    m = probes.probe_metrics(y, p, "multilabel")
    present = y.sum(0) > 0
    assert m["f1_macro"] == pytest.approx(f1_score(y[:, present], p[:, present], average="macro", zero_division=0),
                                          abs=1e-12)
    assert m["f1_micro"] == pytest.approx(f1_score(y, p, average="micro", zero_division=0), abs=1e-12)
    assert m["accuracy"] == pytest.approx((y == p).mean(), abs=1e-12)


def test_frame_labels_presence_and_segment_mean():
    times = np.array([0.01, 0.03, 0.05, 0.07])
    classes = {"a": 0, "b": 1}
    lab = probes.frame_labels(times, [(0.0, 0.04, "a"), (0.04, 0.06, "b")], classes)
    assert lab.tolist() == [0, 0, 1, -1]
    assert probes.presence_matrix([[(0, 1, "b")], []], classes).tolist() == [[0, 1], [0, 0]]
    states = np.arange(8, dtype=float).reshape(1, 4, 2)
    assert probes.segment_mean(times, states, 0.02, 0.06).tolist() == [[3.0, 4.0]]   # frames 1, 2
    assert probes.segment_mean(times, states, 0.071, 0.072).tolist() == [[6.0, 7.0]]  # nearest frame
    # a frame centre on a boundary belongs to the segment that starts there, [start, end)
    assert probes.frame_labels(times, [(0.0, 0.03, "a"), (0.03, 0.07, "b")], classes).tolist() == [0, 1, 1, -1]
    assert probes.segment_mean(times, states, 0.03, 0.07).tolist() == [[3.0, 4.0]]   # frames 1, 2; not 3
    # no centre inside: the frame nearest the segment's middle (0.041 -> 0.05), not its start
    assert probes.segment_mean(times, states, 0.036, 0.046).tolist() == [[4.0, 5.0]]


def test_probe_decision_standardises_with_the_training_statistics():
    probe = probes.LinearProbe(mean=np.array([1.0, 2.0]), std=np.array([2.0, 4.0]), weight=np.eye(2),
                               bias=np.array([0.5, 0.0]), kind="multiclass", weight_decay=0.0, epochs=1,
                               val_f1_macro=0.0)
    x = np.array([[3.0, 10.0], [5.0, 2.0]])
    np.testing.assert_allclose(probe.decision(x), [[1.5, 2.0], [2.5, 0.0]])  # (x - mean) / std @ W + b
    assert probe.predict(x).tolist() == [1, 0]


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


def _fit_one_after_another(x_train, y_train, x_val, y_val, kind, n_classes, weight_decays, max_epochs,
                           eval_every=5, lr=1e-2, batch_size=1024, seed=0):
    """fit_linear_probe as it was written before side-by-side fits (2026-12-04): one AdamW per weight decay."""
    import torch
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.as_tensor((x_train - mean) / std, dtype=torch.float32)
    xv = (x_val - mean) / std
    yt = torch.as_tensor(y_train, dtype=torch.long if kind == "multiclass" else torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss() if kind == "multiclass" else torch.nn.BCEWithLogitsLoss()
    best = None
    for wd in weight_decays:
        gen = torch.Generator().manual_seed(seed)
        layer = torch.nn.Linear(xt.shape[1], n_classes)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.01)
            layer.bias.zero_()
        opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=wd)
        for epoch in range(1, max_epochs + 1):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = order[i:i + batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(layer(xt[idx]), yt[idx]).backward()
                opt.step()
            if epoch % eval_every and epoch != max_epochs:
                continue
            w = layer.weight.detach().numpy().T.astype(np.float64)
            b = layer.bias.detach().numpy().astype(np.float64)
            z = xv @ w + b
            pred = z.argmax(1) if kind == "multiclass" else (z > 0).astype(np.float32)
            f1 = probes.probe_metrics(y_val, pred, kind)["f1_macro"]
            if best is None or f1 > best[2]:
                best = (wd, epoch, f1, w, b)
    return best


def _noisy_task(kind, seed=3):
    """Overlapping classes (validation F1 well below 1, so weight decay and epoch choices matter); 1,100 train
    rows: several mini-batches of 256 per epoch, the last one partial."""
    rng = np.random.default_rng(seed)
    n_classes, hidden = 5, 24
    w = rng.normal(0, 1, (n_classes, hidden))
    data = []
    for n in (1100, 300):
        if kind == "multiclass":
            y = rng.integers(0, n_classes, n)
            x = w[y] * 0.6 + rng.normal(0, 1, (n, hidden))
        else:
            y = (rng.random((n, n_classes)) < 0.4).astype(np.float32)
            x = y @ w * 0.5 + rng.normal(0, 1, (n, hidden))
        data += [x.astype(np.float32), y]
    return data, n_classes


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_one_after_another_is_bit_identical_to_the_previous_fit(kind):
    (xt, yt, xv, yv), c = _noisy_task(kind)
    probe = probes.fit_linear_probe(xt, yt, xv, yv, kind, c, max_epochs=15, batch_size=256, side_by_side=False)
    wd, epoch, f1, w, b = _fit_one_after_another(xt, yt, xv, yv, kind, c, probes.DEFAULT_WEIGHT_DECAYS, 15,
                                                 batch_size=256)
    assert (probe.weight_decay, probe.epochs, probe.val_f1_macro) == (wd, epoch, f1)
    assert np.array_equal(probe.weight, w) and np.array_equal(probe.bias, b)
    assert probe.weight.flags["F_CONTIGUOUS"] == w.flags["F_CONTIGUOUS"]  # the same layout for later products
    for wd in probes.DEFAULT_WEIGHT_DECAYS[1:]:  # each decay alone too, not only the one chosen above
        probe = probes.fit_linear_probe(xt, yt, xv, yv, kind, c, weight_decays=(wd,), max_epochs=15, batch_size=256)
        ref = _fit_one_after_another(xt, yt, xv, yv, kind, c, (wd,), 15, batch_size=256)
        assert np.array_equal(probe.weight, ref[3]) and np.array_equal(probe.bias, ref[4]), wd


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_side_by_side_fits_equal_one_after_another_up_to_rounding(kind):
    (xt, yt, xv, yv), c = _noisy_task(kind)
    wds = (0.0, 0.1, 1.0, 3.0)  # strong decays: each slice must get its own, or the weights would differ visibly
    probe = probes.fit_linear_probe(xt, yt, xv, yv, kind, c, weight_decays=wds, max_epochs=15, batch_size=256,
                                    side_by_side=True)
    wd, epoch, f1, w, b = _fit_one_after_another(xt, yt, xv, yv, kind, c, wds, 15, batch_size=256)
    assert (probe.weight_decay, probe.epochs) == (wd, epoch) and probe.val_f1_macro == pytest.approx(f1, abs=0.02)
    np.testing.assert_allclose(probe.weight, w, atol=1e-4 * np.abs(w).max())
    np.testing.assert_allclose(probe.bias, b, atol=1e-4 * np.abs(w).max())
    # every slice against its own fit: the per-slice decay and loss scaling are right for all of them, not only
    # for the chosen one
    import torch
    for j, wd_j in enumerate(wds):
        ref = _fit_one_after_another(xt, yt, xv, yv, kind, c, (wd_j,), 15, batch_size=256)
        got = probes._fit_weight_decays(torch.as_tensor((xt - xt.mean(0)) / (xt.std(0) + 1e-6)),
                                        torch.as_tensor(yt, dtype=torch.long if kind == "multiclass" else torch.float32),
                                        (xv - xt.mean(0)) / (xt.std(0) + 1e-6), yv, kind, c, list(wds), 15, 5, 1e-2,
                                        256, 0, "cpu")[j]
        assert got[0] == wd_j and got[1] == ref[1]
        np.testing.assert_allclose(got[3], ref[3], atol=1e-4 * np.abs(ref[3]).max())


def test_side_by_side_is_the_default_on_a_gpu_only(monkeypatch):
    seen, as_tensor = [], probes.torch.as_tensor
    monkeypatch.setattr(probes, "_fit_weight_decays", lambda *a: seen.append(len(a[6])) or [(a[6][0], 1, 0.5, None, None)])
    monkeypatch.setattr(probes.torch, "as_tensor", lambda x, dtype=None, device=None: as_tensor(x, dtype=dtype))
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    probes.fit_linear_probe(x, y, x, y, "multiclass", 2, device="cpu")
    assert seen == [1] * 5  # one after another
    seen.clear()
    probes.fit_linear_probe(x, y, x, y, "multiclass", 2, device="cuda")  # no GPU touched: data and fit faked
    assert seen == [5]


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


def test_whisper_pad30_batches_utterances_of_any_lengths_with_the_numbers_of_each_alone(tiny_models, monkeypatch):
    import inference
    import models
    backbone, fe, mt = models.load_backbone(tiny_models["whisper"])
    pad30, truncate = (models.SpeechEncoder(backbone, fe, mt, mode) for mode in ("pad30", "truncate"))
    rng = np.random.default_rng(4)
    wavs = [rng.normal(0, 0.1, n).astype(np.float32) for n in (8000, 12000, 3000, 16000, 9000)]
    single = np.concatenate([probes.utterance_features(pad30, [w], [1, 2], progress=False) for w in wavs], axis=1)
    sizes = []
    real = inference.hidden_states_together
    monkeypatch.setattr(probes, "hidden_states_together",
                        lambda encs, batch, *a: sizes.append(tuple(batch.shape)) or real(encs, batch, *a))
    batched = probes.utterance_features(pad30, wavs, [1, 2], batch_size=4, progress=False)
    assert len(sizes) == 5  # by default only on a GPU (slower on a CPU): one length per pass here
    sizes.clear()
    batched = probes.utterance_features(pad30, wavs, [1, 2], batch_size=4, progress=False, mixed_lengths=True)
    # sorted by length, zero-padded to the longest of each batch; each utterance pooled over its own frames
    assert sizes == [(4, 12000), (1, 16000)]
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    sizes.clear()  # truncated positions see the padding: equal lengths only, as for wav2vec2
    probes.utterance_features(truncate, wavs, [1], batch_size=4, progress=False, mixed_lengths=True)
    assert sorted(sizes) == sorted((1, n) for n in (8000, 12000, 3000, 16000, 9000))


def _word_data(seed: int, category_strength: float, n_words_per_cat: int = 6, n_cats: int = 4, n_occ: int = 8):
    """Occurrences of words: features = category mean · strength + a word-specific offset + noise."""
    rng = np.random.default_rng(seed)
    cat_means = rng.normal(0, 1, (n_cats, 16))
    rows, labels, groups = [], [], []
    for c in range(n_cats):
        for k in range(n_words_per_cat):
            word_offset = rng.normal(0, 1.5, 16)  # word identity: strong, carries no category
            for _ in range(n_occ):
                rows.append(category_strength * cat_means[c] + word_offset + rng.normal(0, 0.5, 16))
                labels.append(c)
                groups.append(f"w{c}_{k}")
    return np.array(rows)[None], np.array(labels), np.array(groups)


def test_group_folds_keep_words_whole_and_balance_labels():
    _, y, g = _word_data(0, 1.0)
    fold = probes.group_folds(y, g, 6, seed=3)
    for word in set(g.tolist()):
        assert len(set(fold[g == word].tolist())) == 1          # a word never straddles folds
    for k in range(6):  # 24 words, 4 per fold, one per category
        words = set(g[fold == k].tolist())
        assert len(words) == 4 and len({y[g == w][0] for w in words}) == 4
    assert (probes.group_folds(y, g, 6, seed=3) == fold).all()
    with pytest.raises(ValueError, match="at least 3 folds"):
        probes.cross_validated_probes(*_word_data(0, 1.0), [1], 4, n_folds=2, progress=False)


def test_cross_validated_probe_generalises_category_to_new_words_only_when_planted():
    planted = probes.cross_validated_probes(*_word_data(1, 3.0), [1], 4, n_folds=6, progress=False, max_epochs=20)
    assert planted[1]["test"]["f1_macro"] > 0.8
    assert len(planted[1]["folds"]) == 6
    # word identity alone (no shared category direction): unseen words cannot be classified above chance (0.25)
    identity_only = probes.cross_validated_probes(*_word_data(1, 0.0), [1], 4, n_folds=6, progress=False, max_epochs=20)
    assert identity_only[1]["test"]["accuracy"] < 0.45
    folds = np.array(identity_only[1]["folds"])  # these differ between folds: the SEM's ddof shows
    assert folds.std() > 0 and identity_only[1]["test"]["f1_macro"] == pytest.approx(folds.mean())
    assert identity_only[1]["sem"]["f1_macro"] == pytest.approx(folds.std(ddof=1) / np.sqrt(6))


def test_cross_validated_probe_never_fits_or_selects_on_test_words(monkeypatch):
    x, y, g = _word_data(2, 1.0)
    seen = []
    real_fit = probes.fit_linear_probe

    def spy(x_train, y_train, x_val, y_val, *a, **k):
        seen.append((x_train, x_val))
        return real_fit(x_train, y_train, x_val, y_val, *a, **k)

    monkeypatch.setattr(probes, "fit_linear_probe", spy)
    fold = probes.group_folds(y, g, 6, seed=0)
    probes.cross_validated_probes(x, y, g, [1], 4, n_folds=6, progress=False, max_epochs=5)
    assert len(seen) == 6
    for k, (x_train, x_val) in enumerate(seen):
        test_rows = {r.tobytes() for r in x[0][fold == k]}
        assert not test_rows & {r.tobytes() for r in x_train}
        assert not test_rows & {r.tobytes() for r in x_val}
        np.testing.assert_array_equal(x_val, x[0][fold == (k + 1) % 6])  # validation: the next fold, whole
    with pytest.raises(ValueError, match="24 groups cannot fill 30 folds"):
        probes.cross_validated_probes(x, y, g, [1], 4, n_folds=30, progress=False)


@pytest.mark.parametrize("side_by_side", [False, True])
def test_the_first_best_epoch_is_kept_and_the_last_epoch_is_always_scored(side_by_side):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 3)) + 6.0 * y[:, None]  # separated at once: validation F1 1 from the first check on
    probe = probes.fit_linear_probe(x[::2], y[::2], x[1::2], y[1::2], "multiclass", 2, weight_decays=[0.0, 1e-3],
                                    max_epochs=20, eval_every=5, side_by_side=side_by_side)
    assert (probe.val_f1_macro, probe.epochs, probe.weight_decay) == (1.0, 5, 0.0)
    # fewer epochs than eval_every: the last one is still scored
    assert probes.fit_linear_probe(x[::2], y[::2], x[1::2], y[1::2], "multiclass", 2, max_epochs=3, eval_every=5,
                                   side_by_side=side_by_side).epochs == 3


def _split_word_data(category_strength: float, seed: int = 0):
    """_word_data's words split by word (4/1/1 per category) into train/val/test, as the miniature's word task."""
    x, y, g = _word_data(seed, category_strength)
    split_of = {f"w{c}_{k}": ("train", "train", "train", "train", "val", "test")[k] for c in range(4) for k in range(6)}
    split = np.array([split_of[w] for w in g])
    return ({s: x[:, split == s] for s in ("train", "val", "test")}, {s: y[split == s] for s in ("train", "val", "test")},
            {s: g[split == s] for s in ("train", "val", "test")})


def test_permutation_null_shuffles_labels_by_group_within_each_split(monkeypatch):
    x, y, g = _split_word_data(1.0)
    seen = []

    class AllZero:  # predicts class 0 for every row
        def predict(self, rows):
            return np.zeros(len(rows), np.int64)

    def spy(x_train, y_train, x_val, y_val, *a, **k):
        seen.append((y_train, y_val))
        return AllZero()

    monkeypatch.setattr(probes, "fit_linear_probe", spy)
    one = {s: v[0] for s, v in x.items()}
    null = probes.permutation_null(one, y, g, 4, 20, seed=5)
    # test split: 4 words x 8 occurrences, one word per class; all-zero predictions score F1 0.4 for class 0,
    # 0 for the others, whatever the shuffle (class counts kept): F1 macro 0.1 in every permutation
    np.testing.assert_allclose(null, 0.1)
    assert len(seen) == 20
    for y_train, y_val in seen:
        for split, shuffled in (("train", y_train), ("val", y_val)):
            assert sorted(shuffled) == sorted(y[split])  # class counts kept
            for word in set(g[split]):
                assert len(set(shuffled[g[split] == word])) == 1  # a word keeps one label
    assert len({y_train.tobytes() for y_train, _ in seen}) > 10  # the shuffles differ
    first_run = [a.tobytes() for a, _ in seen]
    seen.clear()
    probes.permutation_null(one, y, g, 4, 20, seed=5)  # the same seed: the same shuffles
    assert [a.tobytes() for a, _ in seen] == first_run
    bad = {**g, "train": np.roll(g["train"], 1)}  # a word's rows now straddle two labels
    with pytest.raises(ValueError, match="different labels"):
        probes.permutation_null(one, y, bad, 4, 2)


def test_permutation_null_is_deterministic_and_summarised_by_hand():
    x, y, g = _split_word_data(0.0)
    one = {s: v[0] for s, v in x.items()}
    kw = dict(max_epochs=5, weight_decays=(0.0,))
    a = probes.permutation_null(one, y, g, 4, 4, seed=1, **kw)
    np.testing.assert_array_equal(a, probes.permutation_null(one, y, g, 4, 4, seed=1, **kw))
    s = probes.null_summary(np.array([0.0, 0.1, 0.2, 0.3]), 0.2)
    assert s["n"] == 4 and s["p_above"] == pytest.approx(3 / 5)  # (1 + #{0.2, 0.3}) / (1 + 4)
    assert s["mean"] == pytest.approx(0.15) and s["sd"] == pytest.approx(np.sqrt(0.0125))
    assert s["range95"] == pytest.approx([0.0075, 0.2925])


def test_layer_probes_planted_category_lies_above_its_null_identity_alone_does_not():
    kw = dict(max_epochs=20, n_permutations=19, progress=False)
    x, y, g = _split_word_data(3.0, seed=1)
    planted = probes.run_layer_probes(x, y, [1], "multiclass", 4, groups=g, **kw)[1]
    assert planted["test"]["f1_macro"] > 0.8
    assert planted["permutation_null"]["p_above"] == pytest.approx(1 / 20)  # above every shuffled-label probe
    assert planted["permutation_null"]["range95"][1] < 0.8
    x, y, g = _split_word_data(0.0, seed=1)  # word identity only: unseen words' category is not readable
    identity = probes.run_layer_probes(x, y, [1], "multiclass", 4, groups=g, **kw)[1]
    assert identity["permutation_null"]["p_above"] > 0.05
