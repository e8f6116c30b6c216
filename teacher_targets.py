"""Target matrices for the teacher-tuned controls (SPEC-methods.md §7): a teacher's features at the response rows.

A teacher is a layer of a (larger) speech model, taken as the alignment evaluation takes it (causal sliding
windows, one vector per window end), or a word embedding such as the dataset's `english1000sm.hf5` (Huth et
al. 2016: one vector per word at its midpoint, zeros for words outside its vocabulary). Either way the vectors
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
from features import FeatureCache, extract_story_features
from models import SpeechEncoder


def read_word_embedding(path: str | Path) -> tuple[dict[str, int], np.ndarray]:
    """A Huth-lab semantic model file: "/data" (D, W) float, "/vocab" (W,) bytes -> ({word: row}, (W, D) float32).

    Words are lower-cased (the TextGrids' words are looked up lower-cased); a repeated word keeps its first row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: word embedding file missing")
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
    found = cache.load(story, [layer])
    if found is None:
        found = extract_story_features(encoder, data.audio(story), [layer], stride_s, context_s, pooling, data.tr,
                                       batch_size, device, precision, progress, threads)
        cache.save(story, [layer], *found)
    times, feats = found
    return story_tr_features(times, feats[0], data.tr_grid(story), test=False)
