"""Hub ids of the paper's models and randomly initialised models of any family, built offline from configs.

Tests use `size="tiny"` models (hidden 64, 2 layers); benchmarks use `size="base"`, the real geometry of
wav2vec2-base / HuBERT-base / WavLM-base+ (12 layers, 768-d, ~94 M parameters) and whisper-small's encoder.
"""
from __future__ import annotations

import os
from pathlib import Path

PAPER_MODELS = {
    "wav2vec2": "facebook/wav2vec2-base",
    "hubert": "facebook/hubert-base-ls960",
    "whisper": "openai/whisper-small",
    "wavlm": "microsoft/wavlm-base-plus",          # BrainWavLM
    "data2vec-audio": "facebook/data2vec-audio-base",
}

_TINY_CONV = dict(conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def build_random_model(model_type: str, out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised model + feature extractor of `model_type` to `out_dir` (save_pretrained)."""
    import torch
    from transformers import (AutoModel, Data2VecAudioConfig, HubertConfig, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, WavLMConfig, WhisperConfig, WhisperFeatureExtractor)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    configs = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig,
               "data2vec-audio": Data2VecAudioConfig}
    if model_type == "whisper":
        if size == "tiny":
            cfg = WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=100,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                num_mel_bins=80, max_target_positions=32)
        else:  # whisper-small geometry
            cfg = WhisperConfig(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)
        extractor = WhisperFeatureExtractor(feature_size=80)
    elif model_type in configs:
        kwargs = dict(_TINY_CONV, **_TINY) if size == "tiny" else {}
        if model_type == "wavlm" and size == "tiny":
            kwargs.update(num_buckets=32, max_bucket_distance=80)
        cfg = configs[model_type](**kwargs)
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                             do_normalize=True, return_attention_mask=False)
    else:
        raise ValueError(f"unknown model type {model_type!r}")
    model = AutoModel.from_config(cfg)
    model.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    return out_dir


def build_random_text_model(words: list[str], out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny randomly initialised GPT-2 (hidden 32, 2 layers) and a word-level tokenizer over `words` to
    `out_dir`: a causal text LM that loads offline through the Auto classes (tests of the text teacher)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    vocab = {"<unk>": 0, "<eos>": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>").save_pretrained(out_dir)
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=1, eos_token_id=1)
    GPT2Model(config).save_pretrained(out_dir)
    return out_dir
