"""Sliding-window features: window bounds, and several models extracted together sharing their common bottom."""
import numpy as np
import pytest
import torch

import features
import inference
import models

from conftest import FAMILIES


def _encoder(path, mode="truncate"):
    model, fe, mt = models.load_backbone(path)
    return models.SpeechEncoder(model, fe, mt, mode)


def _perturbed(path, block: int | None):
    """The model at `path` with one transformer block's weights changed (None: the conv front end's)."""
    enc = _encoder(path)
    module = enc.front_end_modules(0)[0] if block is None else enc.transformer_layers()[block]
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05)
    return enc


def test_window_bounds_hand_case():
    starts, ends = features.window_bounds(16000 * 3 + 100, stride_s=1.0, context_s=1.5)
    assert ends.tolist() == [16000, 32000, 48000]  # every stride, the partial fourth second dropped
    assert starts.tolist() == [0, 0, 48000 - 40000]  # context + one stride back, clipped at the onset
    for stride, context in ((0.0, 1.5), (-1.0, 1.5), (1.0, -2.0), (float("nan"), 1.5)):
        with pytest.raises(ValueError, match=rf"stride_s > 0, context_s >= 0 and sample_rate > 0 \(found {stride}, "
                                             rf"{context}, 16000\)"):
            features.window_bounds(16000 * 3, stride_s=stride, context_s=context)
    # 0.3 s of audio is 3 strides of 0.1 s, though 4800 / 16000 / 0.1 is 2.9999999999999996 in floats
    assert features.window_bounds(4800, stride_s=0.1, context_s=1.0)[1].tolist() == [1600, 3200, 4800]
    # windows of exactly MIN_WINDOW_SAMPLES are kept, shorter ones dropped
    n = features.MIN_WINDOW_SAMPLES
    starts, ends = features.window_bounds(3 * n, stride_s=n / 16000, context_s=0.0)
    assert (ends - starts).tolist() == [n, n, n]
    assert len(features.window_bounds(3 * (n - 1), stride_s=(n - 1) / 16000, context_s=0.0)[1]) == 0


def test_frames_per_tr_pooling_and_cache_settings(tiny_models):
    w2v, whisper = _encoder(tiny_models["wav2vec2"]), _encoder(tiny_models["whisper"])
    # wav2vec2's convolutions give 499 frames per 10 s: a 2 s TR is 99.8 frames, rounded to 100
    assert w2v.frame_count(160000) == 499 and features.frames_per_tr(w2v, 2.0) == 100
    assert whisper.frame_rate() == 50.0 and features.frames_per_tr(whisper, 2.0045) == 100
    assert features.frames_per_tr(w2v, 0.001) == 1  # never an empty mean
    assert features.resolve_pooling("auto", "whisper") == "last_tr"
    assert features.resolve_pooling("auto", "hubert") == "last" and features.resolve_pooling("mean", "whisper") == "mean"
    # the whisper mode changes a Whisper model's features only
    assert features.cache_settings(0.1, 16, "auto", 2.0, "fp32", "wavlm", "truncate") == \
        features.cache_settings(0.1, 16, "auto", 2.0, "fp32", "wavlm", "pad30")
    assert features.cache_settings(0.1, 16, "auto", 2.0, "fp32", "whisper", "truncate") != \
        features.cache_settings(0.1, 16, "auto", 2.0, "fp32", "whisper", "pad30")
    with pytest.raises(ValueError, match=r"one layer list per encoder \(2\), found 1"):
        features.extract_story_features_together([w2v, w2v], np.zeros(16000, np.float32), [[1]])


def test_a_local_models_fingerprint_changes_when_its_config_is_edited(tiny_models, tmp_path):
    import os
    import shutil
    model = shutil.copytree(tiny_models["wav2vec2"], tmp_path / "m")
    before = features.model_fingerprint(str(model))
    config = model / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10 ** 9))  # config edited
    assert features.model_fingerprint(str(model)) != before


def test_pool_frames_hand_case():
    states = torch.arange(10, dtype=torch.float32).reshape(2, 5, 1)  # window 0: frames 0..4; window 1: 5..9
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])      # window 1 is padded after its 3rd frame
    pooled = {k: features.pool_frames(states, valid, k, 2)[:, 0].tolist() for k in ("last", "last_tr", "mean")}
    assert pooled == {"last": [4.0, 7.0], "last_tr": [3.5, 6.5], "mean": [2.0, 6.0]}
    # a TR longer than the window: all of its valid frames
    assert features.pool_frames(states, valid, "last_tr", 10)[:, 0].tolist() == [2.0, 6.0]


def test_check_finite_features_names_the_model_layers_and_where():
    x = np.zeros((3, 4, 2), np.float32)
    features.check_finite_features(x, [1, 2, 3], "m", "story 'souls'")
    x[1, 2, 0], x[2, 0, 1] = np.nan, -np.inf
    with pytest.raises(models.ModelError, match=r"^m: the hidden states of layer\(s\) \[2, 3\] hold NaN or inf on "
                                                r"story 'souls'"):
        features.check_finite_features(x, [1, 2, 3], "m", "story 'souls'")


@pytest.mark.parametrize("family,threads", [("whisper", 1), ("wav2vec2", 1), ("whisper", 3), ("wav2vec2", 3)])
def test_models_extracted_together_equal_each_alone_and_skip_the_shared_bottom(tiny_models, family, threads):
    base = _encoder(tiny_models[family])
    top_tuned = _perturbed(tiny_models[family], block=1)    # like --freeze-layers 1 of 2
    low_tuned = _perturbed(tiny_models[family], block=0)
    front_tuned = _perturbed(tiny_models[family], block=None)
    encoders = [base, top_tuned, low_tuned, front_tuned]
    whisper = family == "whisper"
    # Whisper shares blocks; the wav2vec2 family only its conv front end (the projection and positional conv follow)
    assert inference.sharing_plan(encoders) == [None, (0, 1 if whisper else 0), (0, 0), None]
    # 24 windows: with threads, many in flight at once, so that a model changed by one thread shows in another
    wav = np.random.default_rng(0).normal(size=int(16000 * 12.3)).astype(np.float32) * 0.1
    layers = [[0, 1, 2], [1, 2], [2], [1, 2]]
    # threads run each op on one core: compare with ops on one core (wav2vec2's convs round differently on two)
    saved = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else saved)
    try:
        alone = [features.extract_story_features(e, wav, ls, 0.5, 2.0, "mean", progress=False)
                 for e, ls in zip(encoders, layers)]
    finally:
        torch.set_num_threads(saved)
    calls = {"front": 0, "block0": 0}
    counted = top_tuned if whisper else low_tuned  # its front end (and Whisper: block 0) come from `base`
    first_conv = next(m for m in counted.front_end_modules(0)[0].modules() if isinstance(m, torch.nn.Conv1d))
    first_conv.register_forward_hook(lambda *a: calls.__setitem__("front", calls["front"] + 1))
    if whisper:
        counted.transformer_layers()[0].register_forward_hook(
            lambda *a: calls.__setitem__("block0", calls["block0"] + 1))
    # threads: windows side by side, the sharers fed from the shared bottom in every thread at once
    times, together = features.extract_story_features_together(encoders, wav, layers, 0.5, 2.0, "mean",
                                                                progress=False, threads=threads)
    assert calls == {"front": 0, "block0": 0}
    np.testing.assert_array_equal(times, alone[0][0])
    for (_, a), b in zip(alone, together):
        np.testing.assert_array_equal(a, b)  # bit for bit: the same operations on the same numbers
    assert not np.array_equal(together[1][-1], together[0][-1])  # the tuned top layer really differs


def test_shared_bottom_needs_the_same_config_and_preprocessing(tiny_models):
    a, b = _encoder(tiny_models["whisper"]), _encoder(tiny_models["whisper"])
    assert models.shared_bottom(a, b) == a.num_layers - 1  # the last block is followed by the final layer norm
    assert models.shared_bottom(a, _encoder(tiny_models["whisper"], "pad30")) is None
    b.model.config.activation_function = "relu"
    assert models.shared_bottom(a, b) is None
    assert models.shared_bottom(a, _encoder(tiny_models["hubert"])) is None
    assert all(models.shared_bottom(_encoder(tiny_models[f]), _encoder(tiny_models[f])) is not None for f in FAMILIES)
    raw = _encoder(tiny_models["wav2vec2"])
    raw.do_normalize = not raw.do_normalize  # the same weights fed other numbers
    assert models.shared_bottom(_encoder(tiny_models["wav2vec2"]), raw) is None


def test_feature_cache_keeps_a_storys_other_layers_when_more_are_saved(tmp_path):
    cache = features.FeatureCache(tmp_path, "some/model", {"stride": 0.5})
    times = np.arange(4, dtype=np.float64)
    feats = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)  # layers 2 and 7
    cache.save("souls", [7, 2], times, feats)
    cache.save("souls", [5], times, feats[:1] + 100)  # another script asks for one more layer
    loaded_times, got = cache.load("souls", [2, 5, 7])
    np.testing.assert_array_equal(loaded_times, times)
    np.testing.assert_array_equal(got, np.stack([feats[1], feats[0] + 100, feats[0]]))
    cache.save("souls", [2], times, feats[:1] - 1)  # a layer saved again is replaced, the others kept
    np.testing.assert_array_equal(cache.load("souls", [2, 7])[1], np.stack([feats[0] - 1, feats[0]]))
    cache.save("souls", [3], times[:2], feats[:1, :2])  # other windows: nothing to keep
    assert cache.load("souls", [2]) is None and cache.load("souls", [3])[1].shape == (1, 2, 3)
    cache.save("souls", [4], times[:2], np.ones((1, 2, 5), np.float32))  # another hidden size: nothing to keep
    assert cache.load("souls", [3]) is None and cache.load("souls", [4])[1].shape == (1, 2, 5)


def test_a_storys_features_from_other_audio_are_a_miss_and_are_replaced(tmp_path):
    # the same story name in another dataset, or its file replaced: the source (audio fingerprint) differs
    cache = features.FeatureCache(tmp_path, "some/model", {})
    times, feats = np.arange(4.0), np.ones((2, 4, 3), dtype=np.float32)
    cache.save("souls", [1, 2], times, feats, source="/data/a/souls.wav|100|1")
    assert cache.has("souls", [1], source="/data/a/souls.wav|100|1")
    np.testing.assert_array_equal(cache.load("souls", [2], source="/data/a/souls.wav|100|1")[1], feats[1:])
    assert not cache.has("souls", [1], source="/data/b/souls.wav|100|1")
    assert cache.load("souls", [1], source="/data/a/souls.wav|100|2") is None and cache.hits == 1
    cache.save("souls", [3], times, feats[:1] + 5, source="/data/b/souls.wav|100|1")  # b's layer 3 alone
    assert cache.load("souls", [1], source="/data/b/souls.wav|100|1") is None  # a's layers 1 and 2 not kept
    np.testing.assert_array_equal(cache.load("souls", [3], source="/data/b/souls.wav|100|1")[1], feats[:1] + 5)
    assert cache.load("souls", [3], source="/data/a/souls.wav|100|1") is None
    assert cache.load("souls", [3]) is not None  # no source asked (the probes' splits): not checked
    cache.save("life", [1], times, feats[:1])  # an entry without a source (written before sources were recorded)
    assert cache.load("life", [1], source="/data/a/life.wav|1|1") is None and cache.load("life", [1]) is not None


def test_a_damaged_feature_cache_file_is_a_miss_and_is_replaced(tmp_path):
    cache = features.FeatureCache(tmp_path, "some/model", {})
    times, feats = np.arange(4.0), np.ones((2, 4, 3), dtype=np.float32)
    cache.save("souls", [1, 2], times, feats)
    path = cache.path("souls")
    path.write_bytes(path.read_bytes()[:150])  # e.g. a cache folder copied while a run wrote it
    assert not cache.has("souls", [1]) and cache.load("souls", [1]) is None
    cache.save("souls", [3], times, feats[:1] + 2)  # extracted again: replaces the damaged file
    assert cache.load("souls", [1]) is None
    np.testing.assert_array_equal(cache.load("souls", [3])[1], feats[:1] + 2)


def test_feature_cache_reads_a_split_once_without_a_second_copy(tmp_path):
    # a frame-level probe split is gigabytes: asking for every stored layer returns the array as read, and has()
    # answers without reading the features
    import tracemalloc
    cache = features.FeatureCache(tmp_path, "some/model", {})
    feats = np.random.default_rng(0).standard_normal((3, 20000, 50)).astype(np.float32)  # 12 MB
    cache.save("train", [2, 3, 1], np.arange(20000.0), feats[[1, 2, 0]])  # stored in layer order all the same
    assert cache.has("train", [3, 1]) and not cache.has("train", [4]) and not cache.has("val", [1])
    assert cache.hits == 0
    tracemalloc.start()
    _, got = cache.load("train", [1, 2, 3])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, feats)
    assert peak < 1.3 * feats.nbytes, peak / feats.nbytes
    assert cache.hits == 1 and cache.load("train", [1, 2, 3], count_hit=False) is not None and cache.hits == 1
    np.testing.assert_array_equal(cache.load("train", [3, 1])[1], feats[[2, 0]])  # a subset: in the order asked


def test_windows_longer_than_whisper_takes_are_refused_before_extraction(mini, tiny_models, tmp_path, capsys):
    import brain_evaluate
    import models
    from features import check_window_fits
    for mode in models.WHISPER_MODES:
        backbone, fe, mt = models.load_backbone(tiny_models["whisper"])
        whisper = models.SpeechEncoder(backbone, fe, mt, mode)
        check_window_fits(whisper, 0.1, 29.9)  # exactly 30 s: fits
        with pytest.raises(models.ModelError, match=r"windows of up to 30.1 s \(--context 30 \+ --stride 0.1\) are "
                                                    r"longer than the 30 s Whisper takes; lower --context to at most 29.9"):
            check_window_fits(whisper, 0.1, 30.0)
    backbone, fe, mt = models.load_backbone(tiny_models["wav2vec2"])
    check_window_fits(models.SpeechEncoder(backbone, fe, mt), 1.0, 60.0)  # any length
    assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                                tiny_models["whisper"], "--out", str(tmp_path / "e"), "--context", "40", "--stride", "2",
                                "--nc-dir", str(mini / "subject_NCs"), "--no-progress"]) == 2
    assert "windows of up to 42 s" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_windows_too_short_to_keep_are_a_usage_error_before_anything_is_read(mini, tiny_models, tmp_path, capsys):
    import brain_evaluate
    import make_teacher_targets
    n = features.MIN_WINDOW_SAMPLES
    assert features.window_problem(n / 16000, 0.0) is None  # exactly the minimum: kept (window_bounds above)
    assert features.window_problem(0.01, 0.01) == (
        "--context 0.01 + --stride 0.01 gives windows of 320 samples, under the 400 (0.025 s) a window needs (the "
        "convolutional front end's first frame): none would be kept; give --context of at least 0.015 s")
    assert len(features.window_bounds(16000 * 5, 0.01, 0.01)[1]) == 0  # what the run would have fitted on
    common = ["--data-dir", str(tmp_path / "nowhere"), "--model-name", tiny_models["wav2vec2"], "--context", "0.01",
              "--stride", "0.01"]
    assert brain_evaluate.main([*common, "--subject", "UTS01", "--out", str(tmp_path / "e")]) == 2
    assert make_teacher_targets.main([*common, "--layer", "1", "--out", str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("gives windows of 320 samples") == 2 and "nowhere" not in err  # before the data are looked at
    assert not (tmp_path / "e").exists() and not (tmp_path / "t.npz").exists()


def test_a_stride_beyond_the_lanczos_reach_is_refused_and_one_above_the_tr_noted():
    from eval_utils import lanczosinterp2d
    tr = 2.0045
    tr_times = np.arange(10, 300) * tr + tr / 2

    def resampled_weights(stride):  # each TR's sum of Lanczos weights over the windows: 0 = all-zero features
        window_ends = np.arange(stride, 300 * tr + 20, stride)
        return lanczosinterp2d(np.ones((len(window_ends), 1)), window_ends, tr_times)[:, 0]
    limit = 2 * features.LANCZOS_LOBES * tr  # 12.027 s
    assert features.stride_problem(limit, tr) is None and (np.abs(resampled_weights(limit)) > 1e-6).all()
    assert features.stride_problem(13, tr) == (
        "--stride 13 s leaves TRs with no feature window within the 3 TRs the Lanczos resampling reaches on either "
        "side: their features would be zeros; give --stride of at most 12.027 s (the paper samples every 0.1 s)")
    assert (resampled_weights(13) == 0).sum() > 0  # what the refusal prevents
    assert features.stride_note(2.0, tr) is None  # the demo's stride: every TR weighed alike
    assert np.ptp(resampled_weights(2.0)) < 0.01
    assert features.stride_note(3, tr).startswith("note: --stride 3 s is longer than the TR (2.0045 s)")
    assert np.ptp(resampled_weights(3)) > 0.1  # TRs weighed unevenly: what the note says
