import json
from pathlib import Path

import numpy as np
import pytest
import torch

import models

from conftest import FAMILIES
from models import (BrainTuningModel, ModelError, SpeechEncoder, VoxelHead, apply_lora, load_backbone, load_head,
                    masked_mean, save_tuned)


def _encoder(path, mode="pad30"):
    model, fe, mt = load_backbone(path)
    enc = SpeechEncoder(model, fe, mt, mode)
    enc.freeze_feature_encoder()
    return enc, fe


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_state_convention_and_frozen_front_end(tiny_models, family):
    enc, _ = _encoder(tiny_models[family])
    enc.eval()
    wav = torch.randn(2, 16000)
    states, valid = enc(wav)
    assert len(states) == enc.num_layers + 1 == 3
    assert valid.sum(1).tolist() == [enc.frame_count(16000)] * 2
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    frozen_prefix = "model.encoder.conv" if family == "whisper" else "model.feature_extractor"
    assert trainable and not any(n.startswith(frozen_prefix) for n in trainable)
    with pytest.raises(ModelError, match=r"layer\(s\) \[7\] out of range: this model has hidden states 0..2"):
        enc(wav, layers=[7])


def test_whisper_pad30_matches_the_hf_encoder(tiny_models):
    from transformers import WhisperModel
    enc, fe = _encoder(tiny_models["whisper"])
    enc.eval()
    wav = np.random.default_rng(0).normal(size=16000 * 3).astype(np.float32) * 0.1
    states, valid = enc(torch.from_numpy(wav)[None], layers=[0, 2])
    feats = fe(wav, sampling_rate=16000, return_tensors="pt").input_features
    ref = WhisperModel.from_pretrained(tiny_models["whisper"]).encoder.eval()
    with torch.no_grad():
        last = ref(feats).last_hidden_state
    torch.testing.assert_close(states[1], last, atol=2e-4, rtol=1e-3)
    assert valid.sum().item() == 150  # 3 s of audio = 150 encoder frames of 20 ms
    trunc, _ = _encoder(tiny_models["whisper"], "truncate")
    trunc.eval()
    t_states, t_valid = trunc(torch.from_numpy(wav)[None], layers=[2])
    assert t_states[0].shape[1] == 150 and bool(t_valid.all())


@pytest.mark.parametrize("do_normalize", [True, False])
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "whisper"])
def test_hidden_states_are_hfs_on_its_feature_extractors_input(tiny_models, family, do_normalize, tmp_path):
    # microsoft/wavlm-base-plus ships do_normalize false (the raw waveform), wav2vec2-base true: each as HF feeds it
    import shutil

    from transformers import AutoFeatureExtractor, AutoModel
    folder = tmp_path / family
    shutil.copytree(tiny_models[family], folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, "do_normalize": do_normalize}))
    enc, _ = _encoder(folder)
    enc.eval()
    assert enc.do_normalize is do_normalize
    wav = np.random.default_rng(1).normal(0.2, 0.05, size=(2, 8000)).astype(np.float32)  # offset and scale matter
    hf_model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        states, _ = enc(torch.from_numpy(wav), layers=[0, 2])
        want, other = (hf_model(AutoFeatureExtractor.from_pretrained(folder, do_normalize=norm)(
            list(wav), sampling_rate=16000, return_tensors="pt").input_values, output_hidden_states=True).hidden_states
            for norm in (do_normalize, not do_normalize))
    # both normalise with ddof 0 (torch here, numpy there): float rounding, measured <= 1.2e-5 apart
    torch.testing.assert_close(states[0], want[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(states[1], want[2], atol=1e-4, rtol=1e-4)
    # the other setting's input gives states ~1e-2 away (group-norm front ends are nearly scale-invariant)
    assert (states[1] - other[2]).abs().max() > 1e-3


def test_whisper_frame_count_counts_every_frame_touching_real_audio_up_to_30_s(tiny_models):
    enc, _ = _encoder(tiny_models["whisper"])
    # 160 samples per mel frame, 2 mel frames per encoder frame: 320 samples (20 ms) per frame
    assert [enc.frame_count(n) for n in (320, 16000, 16001, 16320, 16321)] == [1, 50, 51, 51, 52]
    assert enc.frame_count(30 * 16000) == enc.frame_count(40 * 16000) == 1500  # Whisper's 1500 positions


def test_whisper_takes_30_s_and_refuses_a_sample_more(tiny_models):
    enc, _ = _encoder(tiny_models["whisper"], "truncate")
    enc.eval()
    with torch.no_grad():
        states, valid = enc(torch.zeros(1, 30 * 16000), layers=[1])
        assert states[0].shape[1] == 1500 and bool(valid.all())
        with pytest.raises(ModelError, match=r"Whisper takes at most 30 s of audio; found 30.0 s"):
            enc(torch.zeros(1, 30 * 16000 + 1), layers=[1])


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_hidden_states_out_of_range_are_refused_naming_them(tiny_models, family):
    model, fe, mt = load_backbone(tiny_models[family])
    enc = SpeechEncoder(model, fe, mt)
    for bad in ([-1], [1, enc.num_layers + 1]):  # -1 would silently be the last layer
        with pytest.raises(ModelError, match=rf"layer\(s\) \[{bad[-1]}\] out of range: this model has hidden states "
                                             rf"0..{enc.num_layers}"):
            enc(torch.zeros(1, 16000), layers=bad)


def test_masked_mean_ignores_invalid_frames():
    states = torch.tensor([[[1.0], [3.0], [100.0]]])
    valid = torch.tensor([[True, True, False]])
    assert masked_mean(states, valid).item() == 2.0


@pytest.mark.parametrize("family", FAMILIES)
def test_every_lora_parameter_receives_a_gradient(tiny_models, family):
    enc, _ = _encoder(tiny_models[family])
    targets = apply_lora(enc, rank=4, alpha=4, dropout=0.0)
    model = BrainTuningModel(enc, VoxelHead(enc.hidden_size, 5, rank=3))
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in model.encoder.named_parameters() if "lora_" not in n)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    wav = torch.randn(3, 16000)
    for _ in range(2):  # lora_B starts at 0, so lora_A's gradient is 0 until B has moved once
        opt.zero_grad()
        model(wav).pow(2).mean().backward()
        opt.step()
    dead = [n for n, p in lora.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"{family} ({targets}): LoRA parameters without gradient: {dead[:4]}"


def test_lora_leaves_the_frozen_bottom_blocks_as_they_were(tiny_models):
    enc, _ = _encoder(tiny_models["whisper"], "truncate")
    before = {n: p.detach().clone() for n, p in enc.transformer_layers()[0].named_parameters()}
    apply_lora(enc, rank=2, alpha=4, dropout=0.1, skip_blocks=1)
    enc.freeze_bottom_layers(1)
    bottom, top = enc.transformer_layers()
    assert not any("lora_" in n for n, _ in bottom.named_parameters())
    assert {n: p for n, p in bottom.named_parameters()}.keys() == before.keys()
    assert all(torch.equal(p, before[n]) for n, p in bottom.named_parameters())
    assert any("lora_" in n for n, _ in top.named_parameters())
    assert enc.cacheable_blocks() == 1  # no LoRA dropout left in the frozen block: it can be precomputed
    with pytest.raises(ModelError, match="no transformer block is left for LoRA adapters above the 2 frozen ones"):
        apply_lora(_encoder(tiny_models["whisper"])[0], rank=2, alpha=4, dropout=0.1, skip_blocks=2)


def test_wavlm_attention_lora_is_refused(tiny_models):
    enc, _ = _encoder(tiny_models["wavlm"])
    with pytest.raises(ModelError, match="would never run"):
        apply_lora(enc, 4, 4, 0.0, targets=["q_proj", "v_proj"])


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_a_lora_target_matching_no_layer_is_refused_naming_it(tiny_models, family):
    # peft would adapt q_proj alone and drop the misspelt v_prj without a word
    enc, _ = _encoder(tiny_models[family])
    with pytest.raises(ModelError, match=r"LoRA targets \['v_prj'\] match no linear layer.*'q_proj'.*'v_proj'"):
        apply_lora(enc, 4, 4, 0.0, targets=["q_proj", "v_prj"])
    front = "projection" if family == "wav2vec2" else "conv1"  # the frozen front end's layers are not offered
    with pytest.raises(ModelError, match=rf"\['{front}'\]"):
        apply_lora(enc, 4, 4, 0.0, targets=[front])
    assert not any("lora_" in n for n, _ in enc.named_parameters())
    assert apply_lora(enc, 4, 4, 0.0, targets=["self_attn.q_proj" if family == "whisper" else "attention.q_proj"])


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_saved_model_reloads_as_a_standard_checkpoint(tiny_models, family, tmp_path):
    from transformers import AutoModel
    enc, fe = _encoder(tiny_models[family])
    apply_lora(enc, 4, 4, 0.0)
    model = BrainTuningModel(enc, VoxelHead(enc.hidden_size, 7))
    with torch.no_grad():  # move LoRA away from its identity init so that merging matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        expected = model(wav)
    save_tuned(model, fe, tmp_path / "best")
    reloaded = AutoModel.from_pretrained(tmp_path / "best")
    enc2 = SpeechEncoder(reloaded, fe, family)
    again = BrainTuningModel(enc2, load_head(tmp_path / "best")).eval()
    assert not any("lora" in n for n, _ in again.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(again(wav), expected, atol=1e-4, rtol=1e-4)
    head = tmp_path / "best" / models.HEAD_FILE
    head.write_bytes(head.read_bytes()[:100])  # a partial copy
    with pytest.raises(ModelError, match=f"{tmp_path / 'best'}: no usable voxel head"):
        load_head(tmp_path / "best")


def test_unknown_model_type_is_named(tmp_path):
    from transformers import BertConfig
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"model type 'bert' is not a supported speech encoder"):
        load_backbone(str(tmp_path))


def test_what_is_not_a_model_is_named_with_what_to_pass(tiny_models, tmp_path, monkeypatch):
    run = tmp_path / "run"  # a trainer's out-dir: its config.json is the run record, the model is in best/
    (run / "best").mkdir(parents=True)
    (run / "config.json").write_text('{"args": {}, "command": "brain_trainer_story.py"}')
    with pytest.raises(ModelError, match=f"a brain-tuning run folder, not a model; pass its model, {run / 'best'}"):
        load_backbone(str(run))
    (run / "last").mkdir()  # its resume checkpoint: weights, optimizer and state, no config
    for name in ("model.safetensors", "optim.pt", "state.json"):
        (run / "last" / name).write_bytes(b"")
    with pytest.raises(ModelError, match=f"a brain-tuning run's training state .*, not a model; pass the run's model, "
                                         f"{run / 'best'}"):
        load_backbone(str(run / "last"))
    with pytest.raises(ModelError, match=f"no such folder {tmp_path / 'nowhere'}"):
        load_backbone(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty': a folder without config.json \(it is empty\); a local model folder"):
        load_backbone(str(tmp_path / "empty"))
    (tmp_path / "weights_only").mkdir()  # weights copied without their config
    (tmp_path / "weights_only" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"a folder without config.json \(it holds model.safetensors\)"):
        load_backbone(str(tmp_path / "weights_only"))
    for name in ("config.json", "model.safetensors"):  # a file of the model rather than its folder
        with pytest.raises(ModelError, match=rf"{name}': a file, not a model folder; a local model is the folder "
                                             rf"holding config.json and the weights: pass {tiny_models['hubert']}$"):
            load_backbone(str(Path(tiny_models["hubert"]) / name))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"hub downloads are off \(HF_HUB_OFFLINE=1\) with no cached copy of "
                                         r"someone/no-such-model: pass a local model folder"):
        load_backbone("someone/no-such-model")
    load_backbone(tiny_models["hubert"])  # a model folder still loads


def test_missing_or_damaged_weights_are_a_model_error_naming_the_folder(tiny_models, tmp_path):
    import shutil
    for case in ("cut", "no_weights", "no_preprocessor", "misfit"):
        shutil.copytree(tiny_models["hubert"], tmp_path / case)
    config = json.loads((tmp_path / "misfit" / "config.json").read_text())
    (tmp_path / "misfit" / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] // 2}))
    weights = (tmp_path / "cut" / "model.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    (tmp_path / "no_weights" / "model.safetensors").unlink()
    (tmp_path / "no_preprocessor" / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match=rf"cannot load the hubert model in '{tmp_path / 'cut'}': SafetensorError"):
        load_backbone(str(tmp_path / "cut"))
    with pytest.raises(ModelError, match=rf"model in '{tmp_path / 'no_weights'}': OSError: .*no file named .*model"):
        load_backbone(str(tmp_path / "no_weights"))
    with pytest.raises(ModelError, match=rf"model in '{tmp_path / 'no_preprocessor'}': OSError: .*preprocessor_config"):
        load_backbone(str(tmp_path / "no_preprocessor"))
    with pytest.raises(ModelError, match=rf"model in '{tmp_path / 'misfit'}': its weights do not fit its config.json"):
        load_backbone(str(tmp_path / "misfit"))  # e.g. a config.json edited by hand


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
@pytest.mark.filterwarnings("ignore:At least one mel filter:UserWarning")  # Whisper's mel bank at 8 kHz
def test_a_model_expecting_another_sample_rate_is_refused(tiny_models, family, tmp_path):
    import shutil
    folder = shutil.copytree(tiny_models[family], tmp_path / "m")
    assert load_backbone(str(folder))[1].sampling_rate == 16000
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**pre, "sampling_rate": 8000}))  # telephone speech
    with pytest.raises(ModelError, match=rf"^{folder}: its feature extractor expects 8000 Hz audio "
                                         rf"\(preprocessor_config.json 'sampling_rate'\); the toolkit gives every "
                                         rf"model 16000 Hz audio$"):
        load_backbone(str(folder))



@pytest.mark.parametrize("family", ["wavlm", "whisper"])
def test_weights_missing_from_the_checkpoint_are_refused_or_named(tiny_models, family, tmp_path, capsys):
    import shutil
    from safetensors.torch import load_file, save_file
    saved = load_file(f"{tiny_models[family]}/model.safetensors")
    encoder_keys = [k for k in saved if family != "whisper" or k.startswith("encoder.")]
    cases = {"prefixed": {f"backbone.{k}": v for k, v in saved.items()},  # another tool's wrapper saved it
             "one_missing": {k: v for k, v in saved.items() if k != encoder_keys[-1]},
             "no_decoder": {k: v for k, v in saved.items() if k in encoder_keys}}  # Whisper: the decoder is not used
    for case, weights in cases.items():
        shutil.copytree(tiny_models[family], tmp_path / case)
        save_file(weights, tmp_path / case / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=rf"{tmp_path / 'prefixed'}: the checkpoint lacks {len(encoder_keys)} of the "
                                         rf"{len(encoder_keys)} {family} encoder weights .* and holds \d+ others "
                                         r"\(backbone\..*: saved under another prefix or for another model"):
        load_backbone(str(tmp_path / "prefixed"))
    capsys.readouterr()
    model, _, _ = load_backbone(str(tmp_path / "one_missing"))  # loads, with the weight named
    assert (f"warning: {tmp_path / 'one_missing'}: 1 of the {len(encoder_keys)} {family} encoder weights are missing "
            f"from the checkpoint and were initialised at random ({encoder_keys[-1]})") in capsys.readouterr().err
    model, _, _ = load_backbone(str(tmp_path / "no_decoder"))
    assert "warning" not in capsys.readouterr().err
    torch.testing.assert_close(model.state_dict()[encoder_keys[0]], saved[encoder_keys[0]])

def test_a_checkpoint_fine_tuned_for_a_task_is_read_as_its_encoder_with_a_note(tiny_models, tmp_path, capsys):
    from transformers import AutoFeatureExtractor, Wav2Vec2Config, Wav2Vec2ForCTC
    config = Wav2Vec2Config.from_pretrained(tiny_models["wav2vec2"])
    config.vocab_size = 32
    ctc = Wav2Vec2ForCTC(config)  # as facebook/wav2vec2-base-960h: architectures ["Wav2Vec2ForCTC"], an lm_head
    ctc.save_pretrained(tmp_path / "ctc")
    AutoFeatureExtractor.from_pretrained(tiny_models["wav2vec2"]).save_pretrained(tmp_path / "ctc")
    capsys.readouterr()
    model, _, _ = load_backbone(str(tmp_path / "ctc"))
    assert (f"note: {tmp_path / 'ctc'} is a Wav2Vec2ForCTC checkpoint, fine-tuned for a task: its encoder is used "
            f"with the fine-tuned weights and its task head is left out") in capsys.readouterr().err
    torch.testing.assert_close(model.state_dict()["encoder.layers.0.attention.k_proj.weight"],
                               ctc.state_dict()["wav2vec2.encoder.layers.0.attention.k_proj.weight"])
    for family in ("wav2vec2", "whisper"):  # a self-supervised model; Whisper (every checkpoint holds the decoder)
        load_backbone(tiny_models[family])
        assert "note" not in capsys.readouterr().err
    assert models.task_checkpoint_note("m", ["Wav2Vec2ForPreTraining"], "wav2vec2") is None  # facebook/wav2vec2-base
    assert models.task_checkpoint_note("m", ["HubertModel"], "hubert") is None
    assert models.task_checkpoint_note("m", None, "wavlm") is None  # a config without the field
    assert models.task_checkpoint_note("m", ["WhisperForConditionalGeneration"], "whisper") is None
    assert "a WavLMForXVector checkpoint" in models.task_checkpoint_note("m", ["WavLMForXVector"], "wavlm")


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_freeze_bottom_layers(tiny_models, family):
    backbone, fe, mt = models.load_backbone(tiny_models[family])
    enc = models.SpeechEncoder(backbone, fe, mt)
    enc.freeze_bottom_layers(1)
    blocks = enc.transformer_layers()
    assert not any(p.requires_grad for p in blocks[0].parameters())
    assert all(p.requires_grad for p in blocks[1].parameters())
    front = enc.encoder.conv1 if mt == "whisper" else enc.model.feature_projection
    assert not any(p.requires_grad for p in front.parameters())
    if mt == "whisper":
        assert all(p.requires_grad for p in enc.encoder.layer_norm.parameters())  # after the last block
    with pytest.raises(models.ModelError, match="has 2 transformer layers"):
        enc.freeze_bottom_layers(3)


def test_loading_and_saving_print_no_transformers_bars(tiny_models, tmp_path, capfd):
    """Batch logs get no 'Loading weights' / 'Writing model shards' lines; transformers' own setting is restored."""
    from transformers.utils import logging as hf_logging
    hf_logging.enable_progress_bar()
    enc, fe = _encoder(tiny_models["whisper"])
    save_tuned(BrainTuningModel(enc, VoxelHead(enc.hidden_size, 3)), fe, tmp_path / "best")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err
    assert hf_logging.is_progress_bar_enabled()


def test_hub_revision_is_the_commit_main_names_in_the_hub_cache(tiny_models, tmp_path, monkeypatch):
    from features import model_fingerprint
    from conftest import hub_snapshot, point_hub_cache
    point_hub_cache(monkeypatch, tmp_path / "hub")
    repo = "toolkit-test/tiny-hubert"
    assert models.hub_revision(repo) is None and model_fingerprint(repo) == repo  # not fetched: nothing to name
    hub_snapshot(tmp_path / "hub", repo, tiny_models["hubert"], "c" * 40)
    hub_snapshot(tmp_path / "hub", repo, tiny_models["hubert"], "d" * 40)  # fetched again later: main moved on
    assert models.hub_revision(repo) == "d" * 40 and model_fingerprint(repo) == f"{repo}@{'d' * 40}"
    assert models.hub_revision(tiny_models["hubert"]) is None  # a local folder: its files name it
    assert models.hub_revision("not..a//repo id") is None  # invalid as a repository id: no error, nothing to name


def test_a_revision_loads_and_names_the_snapshot_its_branch_tag_or_commit_names(tiny_models, tmp_path, monkeypatch):
    from conftest import hub_snapshot, point_hub_cache
    from features import model_fingerprint
    from model_zoo import build_random_model
    point_hub_cache(monkeypatch, tmp_path / "hub")
    repo, hub = "toolkit-test/tiny-hubert", tmp_path / "hub"
    hub_snapshot(hub, repo, tiny_models["hubert"], "c" * 40, refs=("main", "v1"))
    hub_snapshot(hub, repo, build_random_model("hubert", tmp_path / "retrained", seed=1), "d" * 40)
    assert models.hub_revision(repo) == "d" * 40
    assert models.hub_revision(repo, "v1") == models.hub_revision(repo, "c" * 40) == "c" * 40
    assert models.hub_revision(repo, "e" * 40) is None and models.hub_revision(repo, "v2") is None  # never fetched
    assert model_fingerprint(repo, "v1") == f"{repo}@{'c' * 40}" != model_fingerprint(repo)
    assert model_fingerprint("toolkit-test/unfetched", "v2") == "toolkit-test/unfetched@v2"  # nothing cached to name

    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])
    local = weights(load_backbone(tiny_models["hubert"])[0])
    assert torch.equal(weights(load_backbone(repo, revision="v1")[0]), local)
    assert torch.equal(weights(load_backbone(repo, revision="c" * 40)[0]), local)
    assert not torch.equal(weights(load_backbone(repo)[0]), local)  # main: the retrained weights
    with pytest.raises(ModelError, match=rf"from '{repo}' at revision 'v2': .*no cached copy of {repo} at revision 'v2'"):
        load_backbone(repo, revision="v2")


def test_a_whisper_read_in_another_mode_than_it_was_tuned_in_is_noted(tmp_path):
    from models import tuned_whisper_mode, whisper_mode_note
    (tmp_path / "brain_tuning.json").write_text(json.dumps({"epoch": 1, "whisper_mode": "truncate"}))
    assert tuned_whisper_mode(str(tmp_path)) == "truncate" and tuned_whisper_mode(str(tmp_path / "none")) is None
    assert whisper_mode_note("m", "truncate", "whisper", "truncate") is None  # read as tuned
    assert whisper_mode_note("m", None, "whisper", "pad30") is None  # pretrained, or tuned before the record
    assert whisper_mode_note("m", "truncate", "wav2vec2", "pad30") is None  # the mode means nothing there
    assert whisper_mode_note("m", None, "hubert", "truncate") == (  # given for a model it does not change: said
        "note: --whisper-mode truncate applies to Whisper models; m (hubert) is read the same in either mode")
    assert whisper_mode_note("m", "truncate", "whisper", "pad30") == (
        "note: m was brain-tuned with --whisper-mode truncate and is read here with --whisper-mode pad30; pass "
        "--whisper-mode truncate to read it as it was tuned (and the same for every model compared with it)")
    (tmp_path / "brain_tuning.json").write_text("{")  # unreadable: the evaluation names it, this stays quiet
    assert tuned_whisper_mode(str(tmp_path)) is None
