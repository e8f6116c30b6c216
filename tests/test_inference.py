"""Inference helpers: the --inference-threads flag and running independent batches side by side."""
import threading
import time

import numpy as np
import pytest
import torch

from inference import inference_threads, map_inference


def test_inference_threads_flag():
    assert inference_threads(None, "cpu") == torch.get_num_threads()
    assert inference_threads(None, torch.device("cuda")) == 1  # a GPU serialises the work anyway
    assert inference_threads(3, "cpu") == 3
    with pytest.raises(ValueError, match="--inference-threads must be >= 1, found 0"):
        inference_threads(0, "cpu")


@pytest.mark.parametrize("threads", [1, 3])
def test_map_inference_keeps_order_runs_side_by_side_and_restores_torch_threads(threads):
    before = torch.get_num_threads()
    seen_threads, running, most = [], [0], [0]
    lock = threading.Lock()

    def fn(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            seen_threads.append(torch.get_num_threads())
        time.sleep(0.02 * (5 - i % 5))  # later items finish first: the output order must not follow
        with lock:
            running[0] -= 1
        return i * i

    assert list(map_inference(fn, list(range(10)), threads, progress=False)) == [i * i for i in range(10)]
    assert most[0] == min(threads, 10)  # threads 3: three items really ran at once
    if threads > 1:
        assert set(seen_threads) == {1}  # each worker's ops on one core, not threads x cores
    else:
        assert set(seen_threads) == {before}  # one item at a time, its ops on every core torch uses
    assert torch.get_num_threads() == before


def test_map_inference_reraises_and_restores_torch_threads():
    before = torch.get_num_threads()

    def fn(i):
        if i == 4:
            raise RuntimeError("window 4 failed")
        return i

    with pytest.raises(RuntimeError, match="window 4 failed"):
        list(map_inference(fn, list(range(8)), 2, progress=False))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [1, 2])
def test_pooled_over_batches_places_each_batch_at_its_items(threads):
    from types import SimpleNamespace

    from inference import pooled_over_batches
    encoders = [SimpleNamespace(hidden_size=3), SimpleNamespace(hidden_size=2)]
    layers = [[1, 4], [2]]

    def fn(idx):  # model k, layer li, item i -> the value 100k + 10li + i in every column
        return [[np.tile(100 * k + 10 * li + np.asarray(idx, float)[:, None], (1, enc.hidden_size))
                 for li in range(len(ls))] for k, (enc, ls) in enumerate(zip(encoders, layers))]
    batches = [np.array([4, 0]), np.array([2]), np.array([5, 3])]  # item 1 in no batch
    out = pooled_over_batches(encoders, layers, 6, fn, batches, threads, progress=False)
    assert [o.shape for o in out] == [(2, 6, 3), (1, 6, 2)] and all(o.dtype == np.float32 for o in out)
    assert out[0][1, :, 0].tolist() == [10, 0, 12, 13, 14, 15]
    assert out[1][0, :, 1].tolist() == [100, 0, 102, 103, 104, 105]


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper"])
def test_models_run_together_equal_each_alone_batch_after_batch(tiny_models, family):
    # A brain-tuned model shares its pretrained start's front end; the shared path must hold up over many
    # batches (transformers 5 records hidden states with hooks, installed once per model object).
    import models
    from inference import hidden_states_together, prepare_for_inference

    def encoder():
        model, fe, mt = models.load_backbone(tiny_models[family])
        enc = models.SpeechEncoder(model, fe, mt, "truncate")
        enc.freeze_feature_encoder()
        return enc

    pre, tuned = encoder(), encoder()
    with torch.no_grad():
        for p in tuned.transformer_layers()[-1].parameters():
            p.add_(0.05)
    alone_pre, alone_tuned = encoder(), encoder()
    alone_tuned.load_state_dict(tuned.state_dict())
    plan = prepare_for_inference([pre, tuned], "cpu")
    prepare_for_inference([alone_pre, alone_tuned], "cpu")
    assert plan[1] is not None and plan[1][0] == 0  # the tuned model starts from the pretrained one's front end
    rng = np.random.default_rng(0)
    for n_samples in (16000, 8000, 16000, 12000):
        batch = torch.from_numpy(rng.normal(size=(2, n_samples)).astype(np.float32))
        together = hidden_states_together([pre, tuned], batch, [[0, 1, 2], [1, 2]], plan)
        for (states, valid), enc, layers in zip(together, (alone_pre, alone_tuned), ([0, 1, 2], [1, 2])):
            ref_states, ref_valid = enc(batch, layers=layers)
            assert len(states) == len(layers)
            for s, r in zip(states, ref_states):
                torch.testing.assert_close(s, r, rtol=1e-5, atol=1e-5)
            assert torch.equal(valid, ref_valid)
    assert not torch.allclose(together[0][0][2], together[1][0][1])  # the tuned top layer differs
    shared = plan[1][1]  # the tuned model asking only for states it shares: copied from the pretrained model's
    (_, _), (states, valid) = hidden_states_together([pre, tuned], batch, [[2], [shared]], plan)
    ref_states, ref_valid = alone_tuned(batch, layers=[shared])
    torch.testing.assert_close(states[0], ref_states[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(valid, ref_valid)


def _whisper(tiny_models):
    """A fresh tiny Whisper encoder (truncate mode) from its folder: every call its own weights to change."""
    import models
    model, fe, mt = models.load_backbone(tiny_models["whisper"])
    return models.SpeechEncoder(model, fe, mt, "truncate")


def test_a_whisper_model_sharing_bottom_blocks_starts_from_them_when_its_root_asks_for_other_layers(tiny_models):
    # the pretrained model asks only for the embeddings; the tuned one (bottom blocks shared) for its top layer:
    # the shared blocks' output must still be computed for the tuned model to start from
    from inference import hidden_states_together, prepare_for_inference

    pre, tuned, alone = (_whisper(tiny_models) for _ in range(3))
    with torch.no_grad():
        for p in tuned.transformer_layers()[-1].parameters():
            p.add_(0.05)
    alone.load_state_dict(tuned.state_dict())
    plan = prepare_for_inference([pre, tuned], "cpu")
    prepare_for_inference([alone], "cpu")
    top = tuned.num_layers
    assert plan[1] == (0, top - 1)
    batch = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 16000)).astype(np.float32))
    (pre_states, _), (tuned_states, _) = hidden_states_together([pre, tuned], batch, [[0], [top]], plan)
    torch.testing.assert_close(tuned_states[0], alone(batch, layers=[top])[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pre_states[0], pre(batch, layers=[0])[0][0], rtol=1e-5, atol=1e-5)


def test_a_model_sharing_with_a_sharer_starts_from_the_model_that_computes_from_the_waveform(tiny_models):
    # pretrained, tuned (block 0 changed, front end shared) and a copy of tuned: the copy shares more with the
    # tuned model than with the pretrained one, but only a model computing from the waveform holds the bottom
    # states to start from; each asking for the top layer only, all three equal each alone
    import models
    from inference import hidden_states_together, prepare_for_inference

    pre, tuned, copy = (_whisper(tiny_models) for _ in range(3))
    with torch.no_grad():
        for p in tuned.transformer_layers()[0].parameters():
            p.add_(0.05)
    copy.load_state_dict(tuned.state_dict())
    alone = [_whisper(tiny_models) for _ in range(3)]
    for a, m in zip(alone, (pre, tuned, copy)):
        a.load_state_dict(m.state_dict())
    plan = prepare_for_inference([pre, tuned, copy], "cpu")
    prepare_for_inference(alone, "cpu")
    assert models.shared_bottom(tuned, copy) > 0 and plan == [None, (0, 0), (0, 0)]
    top = pre.num_layers
    batch = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 16000)).astype(np.float32))
    together = hidden_states_together([pre, tuned, copy], batch, [[top]] * 3, plan)
    for (states, _), a in zip(together, alone):
        torch.testing.assert_close(states[0], a(batch, layers=[top])[0][0], rtol=1e-5, atol=1e-5)


def test_grouped_convs_of_a_model_cast_to_bf16_run_as_they_are(tiny_models, monkeypatch):
    # a float32 detour only for float32 weights: a model whose weights were cast to bf16 runs its own kernels
    import models
    from inference import FP32_CONV_DEVICES, grouped_convs_in_fp32
    enc = models.SpeechEncoder(*models.load_backbone(tiny_models["wav2vec2"]))
    conv = enc.model.encoder.pos_conv_embed.conv.to(torch.bfloat16)
    x = torch.randn(2, conv.in_channels, 40, generator=torch.Generator().manual_seed(0))

    def conv_out():
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
            return conv(x)
    plain = conv_out()
    monkeypatch.setattr("inference.FP32_CONV_DEVICES", FP32_CONV_DEVICES | {"cpu"})
    assert grouped_convs_in_fp32(enc) == 1
    assert torch.equal(conv_out(), plain)


def test_grouped_convs_leave_bf16_autocast_in_inference_only(tiny_models, monkeypatch):
    import models
    from inference import FP32_CONV_DEVICES, grouped_convs_in_fp32, prepare_for_inference
    enc = models.SpeechEncoder(*models.load_backbone(tiny_models["wav2vec2"]))
    keys = list(enc.state_dict())
    conv = enc.model.encoder.pos_conv_embed.conv
    x = torch.randn(2, conv.in_channels, 40, generator=torch.Generator().manual_seed(0))

    def conv_out(mode):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            with torch.inference_mode(mode != "training"):
                return conv(x)
    plain = {m: conv_out(m) for m in ("bf16", "fp32", "training")}
    assert plain["bf16"].dtype == torch.bfloat16
    exact = plain["fp32"].to(torch.bfloat16)  # the float32 convolution, rounded once to bf16
    assert not torch.equal(plain["bf16"], exact)  # else the test could not tell the two paths apart
    assert prepare_for_inference([enc], "cpu") == [None]  # routes the grouped convolutions
    assert list(enc.state_dict()) == keys
    assert torch.equal(conv_out("bf16"), plain["bf16"])  # the CPU is not in FP32_CONV_DEVICES: bit for bit as before
    monkeypatch.setattr("inference.FP32_CONV_DEVICES", FP32_CONV_DEVICES | {"cpu"})
    routed = conv_out("bf16")
    assert routed.dtype == torch.bfloat16 and torch.equal(routed, exact)
    assert grouped_convs_in_fp32(enc) == 1 and torch.equal(conv_out("bf16"), exact)  # idempotent; one grouped layer
    assert torch.equal(conv_out("fp32"), plain["fp32"])  # without autocast: the convolution itself
    assert torch.equal(conv_out("training"), plain["training"])  # with gradients (training): unchanged
    whisper = models.SpeechEncoder(*models.load_backbone(tiny_models["whisper"]))
    assert grouped_convs_in_fp32(whisper) == 0  # Whisper's convolutions are not grouped
