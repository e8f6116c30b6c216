"""The front-end cache computes what the uncached model computes, is keyed on what it depends on, and survives kills."""
import csv
import json

import numpy as np
import pytest
import torch

import brain_trainer_story as trainer
import data_utils as du
import models
import training
from atomic_io import WriteError
from conftest import FAMILIES, torchrun_trainer
from front_end_cache import ARRAY, META, build_front_end_cache


def _encoder(path, mode="truncate", freeze_layers=0):
    model, fe, mt = models.load_backbone(path)
    enc = models.SpeechEncoder(model, fe, mt, mode)
    enc.freeze_feature_encoder()
    enc.freeze_bottom_layers(freeze_layers)
    return enc


def _windows(mini_root, stories=("stagefright",)):
    data = du.Ds003020(mini_root)
    return training.WindowDataset(training.load_story_data(data, ["UTS01"], list(stories), [np.arange(5)], quiet=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_from_the_front_end_equals_forward_from_the_waveform(tiny_models, family):
    enc = _encoder(tiny_models[family], mode="pad30", freeze_layers=1).eval()
    wav = torch.randn(2, 16000 * 3)
    ref, ref_valid = enc(wav)
    n_blocks = enc.cacheable_blocks()
    assert n_blocks == (1 if family == "whisper" else 0)  # tiny Whisper has no dropout; wav2vec2 family: conv only
    front = enc.front_end(wav, n_blocks)
    enc.front_blocks = n_blocks
    states, valid = enc(front=front, valid=ref_valid, layers=list(range(n_blocks, enc.num_layers + 1)))
    for got, want in zip(states, ref[n_blocks:]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(valid, ref_valid)
    with pytest.raises(ValueError, match="needs the valid mask and layers >= front_blocks"):
        enc(front=front)
    if n_blocks:
        with pytest.raises(ValueError, match="needs the valid mask and layers >= front_blocks"):
            enc(front=front, valid=ref_valid, layers=[0])
    # the HF feature encoder is restored after a forward from the front end
    assert "forward" not in vars(enc.model.get_encoder() if family == "whisper" else enc.model.feature_extractor)


def test_front_end_refuses_trainable_or_dropout_blocks(tiny_models):
    model, fe, mt = models.load_backbone(tiny_models["wav2vec2"])
    enc = models.SpeechEncoder(model, fe, mt)  # feature encoder not frozen
    with pytest.raises(models.ModelError, match="trainable parameters"):
        enc.front_end(torch.randn(1, 16000))
    whisper = _encoder(tiny_models["whisper"])  # no --freeze-layers: blocks train
    assert whisper.cacheable_blocks() == 0
    with pytest.raises(models.ModelError, match=r"trainable parameters \(\['self_attn"):
        whisper.front_end(torch.randn(1, 16000), n_blocks=1)
    whisper = _encoder(tiny_models["whisper"], freeze_layers=2)
    assert whisper.cacheable_blocks() == 1  # the last block's output needs the final norm: never cached
    for key in ("dropout", "attention_dropout", "activation_dropout"):  # any of Whisper's dropouts
        setattr(whisper.model.config, key, 0.1)
        assert whisper.cacheable_blocks() == 0, key
        setattr(whisper.model.config, key, 0.0)
    models.apply_lora(whisper, rank=2, alpha=2, dropout=0.1)  # a frozen block with LoRA dropout is not fixed
    whisper.freeze_bottom_layers(1)
    assert whisper.cacheable_blocks() == 0
    with pytest.raises(models.ModelError, match="cannot precompute 1 blocks: at most 0"):
        whisper.front_end(torch.randn(1, 16000), n_blocks=1)


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


# The reference is one window computed at the cache's precision. fp32: batched and single-window convolutions
# differ in the last bits on CPU (seen: 1.2e-6 absolute), bf16 ones too (seen: 2e-5 relative); bf16 arithmetic
# itself moves the values ~1% from fp32. A wrong window is off by ~100%.
@pytest.mark.parametrize("storage,tol", [("fp32", 1e-5), ("bf16", 1e-3)])
def test_cached_values_are_the_front_end_of_each_window(mini_root, tiny_models, tmp_path, storage, tol):
    enc = _encoder(tiny_models["wav2vec2"])
    ds = _windows(mini_root)
    cached = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), storage, batch_size=7, quiet=True)
    assert len(cached) == len(ds) and cached.length == ds.length

    def front_end(i, precision=storage):
        with training.autocast(torch.device("cpu"), precision):
            return enc.front_end(torch.from_numpy(ds.window(i))[None])[0].float()
    for i in (0, 5, len(ds) - 1):
        inputs, target = cached[i]
        want = front_end(i)
        assert _relative_error(inputs["front"], want) < tol
        assert _relative_error(inputs["front"], front_end(i, "fp32")) < 3e-2  # bf16 stays near the fp32 values
        assert _relative_error(inputs["front"], front_end(i - 1 if i else 1)) > 0.1  # the check tells windows apart
        assert inputs["valid"].all() and inputs["valid"].shape == (want.shape[1],)
        np.testing.assert_array_equal(target.numpy(), ds[i][1].numpy())
    per_window = np.prod(want.shape) * (2 if storage == "bf16" else 4)
    assert cached.meta["bytes"] == per_window * len(ds)


def test_cache_is_reused_only_for_the_same_weights_and_audio(mini_root, tiny_models, tmp_path, monkeypatch):
    enc = _encoder(tiny_models["hubert"])
    ds = _windows(mini_root)
    first = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)

    def fail(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(enc, "front_end", fail)
    again = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    assert again.path == first.path
    monkeypatch.undo()
    with torch.no_grad():  # other weights, other audio: new caches beside the first
        enc.model.feature_extractor.conv_layers[0].conv.weight.mul_(1.01)
    changed = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    other = build_front_end_cache(tmp_path, enc, _windows(mini_root, ("life",)), torch.device("cpu"), "fp32",
                                  quiet=True)
    assert len({first.path, changed.path, other.path}) == 3
    assert not np.allclose(changed[0][0]["front"], first[0][0]["front"])


def test_the_key_changes_with_the_window_positions_and_the_waveform_normalisation(mini_root, tiny_models):
    import copy

    from front_end_cache import front_end_key
    enc, ds = _encoder(tiny_models["wav2vec2"]), _windows(mini_root)
    key = front_end_key(enc, ds, 0, "fp32")
    assert front_end_key(enc, ds, 0, "fp32") == key
    shifted = copy.copy(ds)
    shifted.ends = [e + 160 for e in ds.ends]  # the same audio, every window 10 ms later
    assert front_end_key(enc, shifted, 0, "fp32")["audio_blake2b"] != key["audio_blake2b"]
    enc.do_normalize = not enc.do_normalize  # the front end sees other numbers
    assert front_end_key(enc, ds, 0, "fp32") != key
    assert front_end_key(enc, ds, 0, "bf16") != front_end_key(enc, ds, 0, "fp32")
    whisper = _encoder(tiny_models["whisper"])
    truncate = front_end_key(whisper, ds, 0, "fp32")
    whisper.whisper_mode = "pad30"  # 1500 frames instead of the window's own: another array
    assert front_end_key(whisper, ds, 0, "fp32") != truncate


def test_whisper_pad30_cache_marks_only_the_frames_of_real_audio_valid(mini_root, tiny_models, tmp_path):
    enc, ds = _encoder(tiny_models["whisper"], mode="pad30"), _windows(mini_root)
    enc.train()
    cached = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    assert enc.training  # the build ran the front end in eval mode and gave the model back as it was
    front, valid = cached[0][0]["front"], cached[0][0]["valid"]
    want = enc.valid_frames(ds.length, (1, front.shape[0]), "cpu")[0]  # what a forward from the waveform masks
    assert torch.equal(valid, want) and 0 < int(valid.sum()) == enc.frame_count(ds.length) < front.shape[0]
    enc.eval()
    build_front_end_cache(tmp_path / "other", enc, ds, torch.device("cpu"), "fp32", quiet=True)
    assert not enc.training


def test_a_cache_folder_holding_another_key_or_shape_is_not_read(mini_root, tiny_models, tmp_path, capsys):
    from front_end_cache import CachedWindowDataset, _read_meta
    enc, ds = _encoder(tiny_models["wav2vec2"]), _windows(mini_root)
    cached = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32")
    assert "reusing" not in capsys.readouterr().out  # built, not reused
    build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32")
    assert f"front-end cache: reusing {cached.path}" in capsys.readouterr().out
    meta = json.loads((cached.path / META).read_text())
    assert _read_meta(cached.path, meta["key"]) == meta
    # a folder copied under another key's name: its metadata names the windows it holds
    assert _read_meta(cached.path, {**meta["key"], "audio_blake2b": "0" * 32}) is None
    wrong = {**meta, "shape": [meta["shape"][0], meta["shape"][1] + 1]}
    with pytest.raises(ValueError, match=rf"{ARRAY}: expected shape \({len(ds)}, {wrong['shape'][0]}, "
                                         rf"{wrong['shape'][1]}\), found \({len(ds)}, {meta['shape'][0]}, "):
        CachedWindowDataset(cached.path, wrong, ds)


def test_a_cache_the_disk_cannot_hold_is_refused_before_any_window_is_computed(mini_root, tiny_models, tmp_path,
                                                                                 monkeypatch):
    import os
    enc = _encoder(tiny_models["wav2vec2"])
    ds = _windows(mini_root)
    calls = []
    front_end = enc.front_end
    monkeypatch.setattr(enc, "front_end", lambda wav, *a: calls.append(len(wav)) or front_end(wav, *a))

    def quota_reached(fd, offset, length):  # writing the memory map's pages would have died of SIGBUS instead
        raise OSError(122, "Disk quota exceeded")
    monkeypatch.setattr(os, "posix_fallocate", quota_reached)
    with pytest.raises(WriteError, match=r"front_end\.npy\.partial: could not be written \(OSError: \[Errno 122\] "
                                         r"Disk quota exceeded \(\d+\.\d MB needed\)\)"):
        build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    assert calls == [1]  # the one window that finds the output's shape
    assert not list(tmp_path.glob("*/front_end.npy*"))  # the sparse partial file removed
    monkeypatch.undo()
    cached = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)  # space again
    assert json.loads((cached.path / META).read_text())["complete"]


def test_an_interrupted_cache_is_rebuilt(mini_root, tiny_models, tmp_path):
    enc = _encoder(tiny_models["wav2vec2"])
    ds = _windows(mini_root)
    cached = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    want = cached[3][0]["front"].clone()
    (cached.path / META).unlink()  # as if killed before the metadata was written
    np.save(cached.path / ARRAY, np.zeros((1,), np.float32))
    rebuilt = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    torch.testing.assert_close(rebuilt[3][0]["front"], want)
    assert json.loads((rebuilt.path / META).read_text())["complete"]
    # a complete cache whose array was cut short (a partial copy of the folder) is rebuilt too, not read
    array = rebuilt.path / ARRAY
    del rebuilt
    with open(array, "r+b") as f:
        f.truncate(array.stat().st_size // 2)
    again = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    torch.testing.assert_close(again[3][0]["front"], want)
    # metadata not marked complete, or an array of another shape: rebuilt, not read
    meta = json.loads((again.path / META).read_text())
    del again
    np.save(array, np.zeros(np.load(array, mmap_mode="r").shape, np.float32))
    (array.parent / META).write_text(json.dumps({**meta, "complete": False}))
    incomplete = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    torch.testing.assert_close(incomplete[3][0]["front"], want)
    del incomplete
    np.save(array, np.zeros((len(ds), 1, 1), np.float32))  # a whole .npy, written by something else
    reshaped = build_front_end_cache(tmp_path, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    torch.testing.assert_close(reshaped[3][0]["front"], want)


def _metrics(out):
    with open(out / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("family,extra", [("wav2vec2", []), ("whisper", ["--whisper-mode", "truncate",
                                                                         "--freeze-layers", "1"])])
def test_training_with_the_cache_matches_training_without(mini, tiny_models, tmp_path, family, extra):
    common = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", tiny_models[family],
              "--nc-dir", str(mini / "subject_NCs"), "--batch-size", "16", "--num-epochs", "2", "--no-progress",
              "--seed", "5", "--head-lr", "3e-3", "--init-head", "ridge", *extra]
    assert trainer.main([*common, "--out-dir", str(tmp_path / "plain")]) == 0
    shared = tmp_path / "shared_cache"
    assert trainer.main([*common, "--out-dir", str(tmp_path / "cached"), "--cache-front-end",
                         "--front-end-cache-dir", str(shared)]) == 0
    plain, cached = _metrics(tmp_path / "plain"), _metrics(tmp_path / "cached")
    for a, b in zip(plain, cached):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert np.isnan(a["train_loss"]) or a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    cfg = json.loads((tmp_path / "cached" / "config.json").read_text())["args"]["resolved"]["front_end_cache"]
    assert cfg["blocks_included"] == (1 if family == "whisper" else 0) and cfg["gigabytes"] > 0
    assert len([d for d in shared.iterdir() if d.is_dir()]) == 2  # train and validation windows, kept
    # the default folder inside the run is removed when the run finishes
    assert trainer.main([*common, "--out-dir", str(tmp_path / "default"), "--cache-front-end",
                         "--num-epochs", "1"]) == 0
    assert not (tmp_path / "default" / "front_end_cache").exists()


def test_trainer_exits_2_when_the_front_end_is_not_frozen(mini, tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models.SpeechEncoder, "freeze_feature_encoder", lambda self: None)
    code = trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                         tiny_models["wav2vec2"], "--nc-dir", str(mini / "subject_NCs"), "--out-dir",
                         str(tmp_path / "r"), "--num-epochs", "1", "--no-progress", "--cache-front-end"])
    assert code == trainer.EXIT_USAGE
    assert "--cache-front-end" in capsys.readouterr().err


def test_concurrent_runs_sharing_a_folder_build_the_cache_once(mini_root, tiny_models, tmp_path):
    import threading
    ds = _windows(mini_root)
    encoders = [_encoder(tiny_models["wav2vec2"]) for _ in range(2)]
    calls, results = [], [None, None]
    for enc in encoders:
        original = enc.front_end

        def counted(*a, _orig=original, **k):
            calls.append(1)
            return _orig(*a, **k)
        enc.front_end = counted

    def build(i):
        results[i] = build_front_end_cache(tmp_path, encoders[i], ds, torch.device("cpu"), "fp32", quiet=True)
    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n_batches = -(-len(ds) // 16)
    assert len(calls) == n_batches + 1  # one shape probe + one pass over the windows, by one of the two runs
    assert results[0].path == results[1].path
    torch.testing.assert_close(results[0][4][0]["front"], results[1][4][0]["front"])


def test_torchrun_ranks_fill_one_shared_cache(mini, tiny_models, tmp_path, monkeypatch):
    shared = tmp_path / "cache"
    res = torchrun_trainer(mini, tiny_models["wav2vec2"], tmp_path / "ddp", tmp_path, "--num-epochs", "1",
                           "--cache-front-end", "--front-end-cache-dir", str(shared))
    assert res.returncode == 0, res.stderr[-3000:]
    # this process finds the two ranks' cache complete (nothing recomputed) and right for windows of both ranks
    enc = _encoder(tiny_models["wav2vec2"])
    nc = np.load(mini / "subject_NCs" / "UTS01.npy")
    data = du.Ds003020(mini / "ds003020")
    ds = training.WindowDataset(training.load_story_data(data, ["UTS01"], ["stagefright", "life"],
                                                         [np.flatnonzero(nc > 0.4)], quiet=True))
    reference = enc.front_end
    monkeypatch.setattr(enc, "front_end", lambda *a, **k: pytest.fail("recomputed a cache torchrun built"))
    cached = build_front_end_cache(shared, enc, ds, torch.device("cpu"), "fp32", quiet=True)
    for i in (0, 1, len(ds) - 1):  # rank 0 computed even windows, rank 1 odd ones
        torch.testing.assert_close(cached[i][0]["front"], reference(torch.from_numpy(ds.window(i))[None])[0])


def test_control_run_reads_the_pooled_features_its_tuned_run_wrote(mini, tiny_models, tmp_path):
    common = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", tiny_models["whisper"],
              "--nc-dir", str(mini / "subject_NCs"), "--batch-size", "16", "--num-epochs", "1", "--no-progress",
              "--seed", "5", "--init-head", "ridge", "--whisper-mode", "truncate", "--freeze-layers", "1"]
    shared = ["--cache-front-end", "--front-end-cache-dir", str(tmp_path / "shared")]
    control = ["--target-control", "block-shuffle"]
    assert trainer.main([*common, *shared, "--out-dir", str(tmp_path / "tuned")]) == 0
    assert trainer.main([*common, *shared, *control, "--out-dir", str(tmp_path / "control")]) == 0
    assert trainer.main([*common, *control, "--out-dir", str(tmp_path / "control_alone")]) == 0
    head = {r: json.loads((tmp_path / r / "config.json").read_text())["head_init"]
            for r in ("tuned", "control", "control_alone")}
    assert head["tuned"]["pooled_features"] == "computed" == head["control_alone"]["pooled_features"]
    stored = list((tmp_path / "shared").glob("*/pooled_*.npz"))
    assert len(stored) == 1 and head["control"]["pooled_features"] == f"read from {stored[0]}"
    # read features + the control's own targets give the head (and epoch-0 loss) of computing them afresh
    assert head["control"]["median_alpha"] == head["control_alone"]["median_alpha"]
    assert _metrics(tmp_path / "control")[0]["val_loss"] == pytest.approx(
        _metrics(tmp_path / "control_alone")[0]["val_loss"], rel=1e-5)
    with np.load(stored[0]) as f:
        assert sorted(f.files) == ["train", "val"]  # features only: each run brings its own targets


def test_pooled_features_file_is_named_by_every_weight_and_the_windows(mini_root, tiny_models, tmp_path):
    from front_end_cache import pooled_features_path
    enc = _encoder(tiny_models["whisper"], freeze_layers=1)
    train = build_front_end_cache(tmp_path, enc, _windows(mini_root), torch.device("cpu"), "fp32", quiet=True)
    val = build_front_end_cache(tmp_path, enc, _windows(mini_root, ("life",)), torch.device("cpu"), "fp32", quiet=True)
    path = pooled_features_path(train, val, enc)
    assert path.parent == train.path and path == pooled_features_path(train, val, enc)
    assert pooled_features_path(train, train, enc) != path  # other validation windows
    with torch.no_grad():
        enc.model.get_encoder().layers[-1].fc2.bias.add_(1e-3)  # a trainable block above the cached front end
    assert pooled_features_path(train, val, enc) != path


def test_init_head_ridge_computes_once_and_rejects_a_file_of_other_windows(mini_root, tiny_models, tmp_path,
                                                                          monkeypatch):
    enc = _encoder(tiny_models["whisper"], freeze_layers=1)
    ds = _windows(mini_root)
    model = models.BrainTuningModel(enc, models.VoxelHead(enc.hidden_size, 5))
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    calls = []
    real = training.pooled_features
    monkeypatch.setattr(training, "pooled_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    file = tmp_path / "pooled.npz"
    first = training.init_head_ridge(model, loader, loader, torch.device("cpu"), "fp32", True, feature_file=file)
    w_first = model.head.net.weight.detach().clone()
    assert first["pooled_features"] == "computed" and len(calls) == 2 and file.is_file()
    again = training.init_head_ridge(model, loader, loader, torch.device("cpu"), "fp32", True, feature_file=file)
    assert again["pooled_features"] == f"read from {file}" and len(calls) == 2
    torch.testing.assert_close(model.head.net.weight, w_first, rtol=0, atol=0)
    for kind in ("mse", "temporal_corr"):  # epoch-0 validation from the features = a pass of the model (same batches)
        from_features = training.init_head_ridge(model, loader, loader, torch.device("cpu"), "fp32", True,
                                                 feature_file=file, loss_kind=kind)["initial_val"]
        assert from_features == pytest.approx(training.evaluate(model, loader, kind, torch.device("cpu"), "fp32", True),
                                              rel=1e-6)
    np.savez(file, train=np.zeros((3, enc.hidden_size)), val=np.zeros((3, enc.hidden_size)))  # other windows
    assert training.init_head_ridge(model, loader, loader, torch.device("cpu"), "fp32", True,
                                    feature_file=file)["pooled_features"] == "computed" and len(calls) == 4
