"""Target matrices for the teacher-tuned controls (SPEC-methods.md §7): a teacher's features at the response rows.

A teacher is a layer of a (larger) speech model, taken as the alignment evaluation takes it (causal sliding
windows, one vector per window end); a word embedding such as the dataset's `english1000sm.hf5` (Huth et
al. 2016: one vector per word at its midpoint, zeros for words outside its vocabulary); or a layer of a text
language model (per word, its hidden state at the word's last token, the model reading the word and the words
before it, as in Jain & Huth 2018 and Antonello et al. 2021; zeros for non-lexical labels). Either way the vectors
are Lanczos-downsampled to the story's TR grid, cut to the rows of the hf5 responses (TR grid `[10:-5]`) and
z-scored per story like the responses, by `alignment.story_tr_features`, the evaluation's own function. The
result, {story: (respdict − 20, F)}, is what `brain_trainer_story.py --targets-from` regresses onto.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from alignment import story_tr_features
from data_utils import DataError, Ds003020
from file_readers import missing_file_message
from features import FeatureCache, extract_story_features
from models import SUPPORTED_TYPES, ModelError, SpeechEncoder, at_revision, model_path_hint


def read_word_embedding(path: str | Path) -> tuple[dict[str, int], np.ndarray]:
    """A Huth-lab semantic model file: "/data" (D, W) float, "/vocab" (W,) bytes -> ({word: row}, (W, D) float32).

    Words are lower-cased (the TextGrids' words are looked up lower-cased); a repeated word keeps its first row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(missing_file_message(path, "word embedding file"))
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "vocab") if k not in f]
            if missing:
                raise DataError(f"{path}: expected keys 'data' (dims, words) and 'vocab' (words,), found keys "
                                f"{sorted(f.keys())}")
            data, vocab = np.asarray(f["data"], dtype=np.float32), np.asarray(f["vocab"])
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from err
    if data.ndim != 2 or vocab.ndim != 1 or data.shape[1] != len(vocab):
        raise DataError(f"{path}: expected 'data' of shape (dims, {len(vocab)}) for the {len(vocab)} words of "
                        f"'vocab', found 'data' {data.shape} and 'vocab' {vocab.shape}")
    words = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in vocab]
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w.lower(), i)
    return index, np.ascontiguousarray(data.T)


def word_vectors(labels: list[str], index: dict[str, int], embedding: np.ndarray) -> tuple[np.ndarray, int]:
    """(n_words, D) float32 embedding rows of `labels` (lower-cased; zeros outside the vocabulary), and how many
    of the words the vocabulary has."""
    rows = np.array([index.get(w.lower(), -1) for w in labels], dtype=np.int64)
    out = np.zeros((len(labels), embedding.shape[1]), dtype=np.float32)
    known = rows >= 0
    out[known] = embedding[rows[known]]
    return out, int(known.sum())


def word_embedding_targets(data: Ds003020, story: str, index: dict[str, int],
                           embedding: np.ndarray) -> tuple[np.ndarray, dict]:
    """(respdict − 20, D) targets of one story from its words (TextGrid tier 1, Huth filtering), and a record
    {words, in_vocabulary}."""
    words = data.words(story)
    vecs, n_known = word_vectors(list(words.labels), index, embedding)
    return story_tr_features(words.midpoints, vecs, data.tr_grid(story), test=False), \
        {"words": len(words.labels), "in_vocabulary": n_known}


def speech_layer_targets(data: Ds003020, story: str, encoder: SpeechEncoder, layer: int, cache: FeatureCache,
                         stride_s: float, context_s: float, pooling: str, batch_size: int = 1, device="cpu",
                         precision: str = "fp32", progress: bool = True, threads: int = 1) -> np.ndarray:
    """(respdict − 20, hidden) targets of one story: hidden state `layer` on the evaluation's sliding windows.

    Features come from `cache` when the evaluation (or an earlier call) already extracted them with the same
    settings, and are saved there otherwise.
    """
    source = data.audio_fingerprint(story)  # the story's audio file: another dataset's features are not read
    found = cache.load(story, [layer], source=source)
    if found is None:
        found = extract_story_features(encoder, data.audio(story), [layer], stride_s, context_s, pooling, data.tr,
                                       batch_size, device, precision, progress, threads)
        cache.save(story, [layer], *found, source=source)
    times, feats = found
    return story_tr_features(times, feats[0], data.tr_grid(story), test=False)


def is_lexical(label: str) -> bool:
    """A word the text model reads: not empty and not a braced annotation such as {SL}, {CG}, {IG}."""
    label = label.strip()
    return bool(label) and not (label.startswith("{") and label.endswith("}"))


def load_text_model(name_or_path: str, device="cpu", revision: str = "main"):
    """(tokenizer, model in eval mode) of a hub id (at hub branch, tag or commit `revision`) or local dir through the
    Auto classes (weights as shipped; remote code never runs). Raises ModelError naming the model."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    where = f"{name_or_path!r}{at_revision(revision)}"
    if Path(name_or_path).expanduser().exists() and (hint := model_path_hint(name_or_path, revision)):
        raise ModelError(f"cannot load a text model from {where}: {hint}")  # a file of a model, a run folder
    try:
        model_type = AutoConfig.from_pretrained(name_or_path, revision=revision).model_type
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a text model config from {where}: "
                         f"{model_path_hint(name_or_path, revision) or err}") from err
    if model_type in SUPPORTED_TYPES:  # its tokenizer, if any, is a CTC character vocabulary (or none at all)
        raise ModelError(f"{where} is a {model_type} speech model, not a text model: a speech teacher is given "
                         f"as --model-name")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        model = AutoModel.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError, TypeError) as err:  # TypeError: a tokenizer whose vocabulary file is absent
        raise ModelError(f"cannot load a text model and its tokenizer from {where}: {type(err).__name__}: "
                         f"{err}") from err
    return tokenizer, model.to(device).eval()


def text_model_word_vectors(labels: list[str], tokenizer, model, layer: int, context_words: int = 20,
                            batch_size: int = 32, device="cpu", progress: bool = False) -> np.ndarray:
    """(n_words, hidden) float32: per lexical word, hidden state `layer` (0 = embeddings) at its last token, the
    model reading the `context_words` lexical words before it and the word itself (no special tokens);
    zeros for non-lexical labels. Words are read in lower case, as the Huth-lab word sequences hold them
    (`DataSequence.from_grid`), since the stories' TextGrids spell words in upper or lower case. Contexts run in
    right-padded batches, sorted by length."""
    import torch
    from tqdm import tqdm
    lexical = [i for i, w in enumerate(labels) if is_lexical(w)]
    words = [labels[j].strip().lower() for j in lexical]
    texts = [" ".join(words[max(0, k - context_words):k + 1]) for k in range(len(lexical))]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if any(not x for x in ids):
        raise ModelError(f"the tokenizer gave no token for the context {texts[[len(x) for x in ids].index(0)]!r}")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    longest = max((len(x) for x in ids), default=0)
    if limit and longest > limit:
        raise ModelError(f"a context of {context_words} words is {longest} tokens, more than the model's {limit} "
                         f"positions: lower --context-words")
    out = np.zeros((len(labels), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    with torch.inference_mode():
        for b0 in tqdm(range(0, len(order), batch_size), desc="words", leave=False, disable=not progress):
            batch = order[b0:b0 + batch_size]
            lengths = torch.tensor([len(ids[k]) for k in batch])
            input_ids = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
            for row, k in enumerate(batch):
                input_ids[row, :len(ids[k])] = torch.tensor(ids[k])
            mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
            states = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           output_hidden_states=True).hidden_states[layer]
            last = states[torch.arange(len(batch)), (lengths - 1).to(device)]
            out[[lexical[k] for k in batch]] = last.float().cpu().numpy()
    return out


def text_model_targets(data: Ds003020, story: str, tokenizer, model, layer: int, context_words: int = 20,
                       batch_size: int = 32, device="cpu", progress: bool = False) -> tuple[np.ndarray, dict]:
    """(respdict − 20, hidden) targets of one story from its words at their midpoints, and a record {words, lexical}."""
    words = data.words(story)
    vecs = text_model_word_vectors(list(words.labels), tokenizer, model, layer, context_words, batch_size, device,
                                   progress)
    return story_tr_features(words.midpoints, vecs, data.tr_grid(story), test=False), \
        {"words": len(words.labels), "lexical": sum(map(is_lexical, words.labels))}
