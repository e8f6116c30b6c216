"""Randomly initialised models built offline from configs: deterministic per seed, loadable as the real ones."""
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from model_zoo import build_random_model, build_random_text_model


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_a_seed_decides_every_weight(tmp_path):
    a = _weights(build_random_model("wav2vec2", tmp_path / "a", seed=3))
    b = _weights(build_random_model("wav2vec2", tmp_path / "b", seed=3))
    c = _weights(build_random_model("wav2vec2", tmp_path / "c", seed=4))
    assert a.keys() == b.keys() == c.keys()
    assert all((a[k] == b[k]).all() for k in a)
    layer = "encoder.layers.0.attention.k_proj.weight"
    assert (a[layer] != c[layer]).any()


@pytest.mark.parametrize("model_type", ["hubert", "whisper"])
def test_tiny_models_load_through_the_auto_classes_with_their_extractor(model_type, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModel
    folder = build_random_model(model_type, tmp_path / model_type)
    model, extractor = AutoModel.from_pretrained(folder), AutoFeatureExtractor.from_pretrained(folder)
    assert extractor.sampling_rate == 16000 and model.config.hidden_size == 64
    inputs = extractor(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt")
    encoder = model.get_encoder() if model_type == "whisper" else model
    with torch.no_grad():
        out = encoder(*inputs.values(), output_hidden_states=True)
    assert len(out.hidden_states) == 3  # the input embedding and 2 layers


def test_an_unknown_family_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown model type 'conformer'"):
        build_random_model("conformer", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_text_model_tokenizes_each_word_as_one_token(tmp_path):
    from transformers import AutoTokenizer
    folder = build_random_text_model(["bear", "pear", "the"], tmp_path / "lm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("the bear pear")["input_ids"] == [4, 2, 3] and tokenizer("owl")["input_ids"] == [0]
