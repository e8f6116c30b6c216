"""Semantic preference of a representation space (Choi et al. 2024): synonyms vs near-homophones, per layer.

Each word's audio segments (from TextGrid or TIMIT .WRD alignments) are pooled per layer over the frames of
the word, with `context_s` seconds of preceding audio given to the model; a word's vector is the mean over its
occurrences. Semantic preference = mean cosine(synonym pairs) − mean cosine(near-homophone pairs): positive
when meaning outweighs sound. Random pairs of the same words are reported as a baseline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from file_readers import DataError, read_tsv
from downstream_data import check_within_audio
from features import MIN_WINDOW_SAMPLES
from inference import map_inference, prepare_for_inference
from models import ModelError
from probes import frame_features_together, segment_mean

RELATIONS = ("synonym", "near_homophone")
ENGLISH_PAIRS = Path(__file__).resolve().parent / "downstream" / "semantic_pairs_en.tsv"


def read_pairs(path: str | Path) -> list[tuple[str, str, str]]:
    """TSV with header `word1 word2 relation` (relation in RELATIONS) -> [(word1, word2, relation)]."""
    pairs = []
    for i, row in read_tsv(path, ["word1", "word2", "relation"]):
        if len(row) != 3 or row[2] not in RELATIONS:
            raise DataError(f"{path}, line {i}: expected word1, word2, relation in {RELATIONS}; found {row}")
        pairs.append((row[0].lower(), row[1].lower(), row[2]))
    return pairs


def word_occurrences(words_by_source: dict[str, list[tuple[float, float, str]]], vocabulary: set[str],
                     max_per_word: int = 10) -> dict[str, list[tuple[str, float, float]]]:
    """{word: [(source, start_s, end_s)]} for the words of `vocabulary`, at most `max_per_word` each (in order)."""
    occ: dict[str, list] = {}
    for source, words in words_by_source.items():
        for a, b, w in words:
            w = w.lower()
            if w in vocabulary and len(occ.setdefault(w, [])) < max_per_word:
                occ[w].append((source, a, b))
    return occ


def context_label_counts(words_by_source: dict[str, list[tuple[float, float, str]]], occurrences: dict[str, list],
                         label_of: dict[str, str], classes: dict[str, int], context_s: float = 3.0) -> np.ndarray:
    """(n_occurrences, n_classes) counts of the labels of the words heard in the `context_s` s before each occurrence.

    A labelled word counts when its interval overlaps [start − context_s, start) of the same source, the
    occurrence itself excluded. Rows follow `occurrence_features`' order (sorted by word, then occurrence order).
    With text-coherent labels (a story's topic), these counts alone predict a word's label: the score of a probe
    on them is what tracking the context's labels, without knowing the word, would reach.
    """
    tiers = {}  # per source once: (starts, ends, class index or -1)
    for source, words in words_by_source.items():
        cls = [classes.get(label_of.get(w.lower()), -1) for _, _, w in words]
        tiers[source] = (np.array([a for a, _, _ in words]), np.array([b for _, b, _ in words]), np.array(cls, int))
    rows = np.zeros((sum(map(len, occurrences.values())), len(classes)), np.float32)
    i = 0
    for word in sorted(occurrences):
        for source, a, _ in occurrences[word]:
            starts, ends, cls = tiers[source]
            heard = (ends > a - context_s) & (starts < a) & (cls >= 0)
            np.add.at(rows[i], cls[heard], 1.0)
            i += 1
    return rows


def segment_samples(start_s: float, end_s: float, context_s: float, n_samples: int) -> tuple[int, int]:
    """First and end sample of a word's segment: the word and `context_s` s before it, within the audio, widened
    back (then forward, at the audio's start) to MIN_WINDOW_SAMPLES, the least the convolutional front end turns
    into a frame (a 10-ms word at --context 0 gave none, and a crash)."""
    start = max(0, int((start_s - context_s) * 16000))
    end = min(n_samples, int(np.ceil(end_s * 16000)))
    if end - start < MIN_WINDOW_SAMPLES:
        start = max(0, end - MIN_WINDOW_SAMPLES)
        end = min(n_samples, start + MIN_WINDOW_SAMPLES)
    return start, end


def occurrence_features(encoder, audio_by_source: dict[str, np.ndarray], occurrences: dict[str, list],
                        layers: list[int], context_s: float = 3.0, device="cpu",
                        progress: bool = True, threads: int = 1) -> tuple[list[str], np.ndarray]:
    """Per-layer mean over each occurrence's frames; the model sees `context_s` s of audio before the word.

    occurrences : {word: [(source, start_s, end_s)]} (see `word_occurrences`); audio at 16 kHz per source.
    Returns the word of each occurrence (sorted by word, then in `occurrences` order) and
    (n_layers, n_occurrences, hidden) float32.
    """
    words, (feats,) = occurrence_features_together([encoder], audio_by_source, occurrences, [layers], context_s,
                                                   device, progress, threads)
    return words, feats


def occurrence_features_together(encoders: list, audio_by_source: dict[str, np.ndarray], occurrences: dict[str, list],
                                 layers: list[list[int]], context_s: float = 3.0, device="cpu",
                                 progress: bool = True, threads: int = 1) -> tuple[list[str], list[np.ndarray]]:
    """`occurrence_features` of several models (layers per model), the bottom they share computed once;
    occurrences side by side in `threads` threads (`inference.map_inference`; same numbers)."""
    plan = prepare_for_inference(encoders, device)
    flat = [(w, o) for w in sorted(occurrences) for o in occurrences[w]]
    for _, (source, _, b) in flat:  # before any extraction
        check_within_audio(source, b, len(audio_by_source[source]), "word segments")
    bounds = [segment_samples(a, b, context_s, len(audio_by_source[source])) for _, (source, a, b) in flat]
    longest = max((end - start for start, end in bounds), default=0)
    for enc in encoders:  # found before the first segment, named by the flag that shortens it
        if enc.model_type == "whisper" and longest > enc.max_input_samples:
            raise ModelError(f"word segments (each word with --context {context_s:g} s of audio before it) reach "
                             f"{longest / 16000:.1f} s, more than the {enc.max_input_samples / 16000:g} s Whisper "
                             f"takes; lower --context")

    def segment_means(item) -> list[np.ndarray]:
        (_, (source, a, b)), (start, end) = item
        return [segment_mean(times, states, a - start / 16000, b - start / 16000) for times, states in
                frame_features_together(encoders, audio_by_source[source][start:end], layers, device, plan)]

    vecs = [[] for _ in encoders]
    for per_model in map_inference(segment_means, list(zip(flat, bounds)), threads, "word segments", progress):
        for k, v in enumerate(per_model):
            vecs[k].append(v)
    words = [w for w, _ in flat]
    return words, [np.stack(v, axis=1).astype(np.float32) if v else np.zeros((len(ls), 0, enc.hidden_size), np.float32)
                   for v, ls, enc in zip(vecs, layers, encoders)]


def mean_by_word(words: list[str], feats: np.ndarray) -> dict[str, np.ndarray]:
    """{word: (n_layers, hidden)} mean over the word's occurrences; feats (n_layers, n_occurrences, hidden)."""
    words = np.array(words)
    return {w: feats[:, words == w].mean(axis=1) for w in sorted(set(words.tolist()))}


def word_embeddings(encoder, audio_by_source: dict[str, np.ndarray], occurrences: dict[str, list], layers: list[int],
                    context_s: float = 3.0, device="cpu", progress: bool = True) -> dict[str, np.ndarray]:
    """{word: (n_layers, hidden)} mean over occurrences of the word's frames; each run sees `context_s` s before it."""
    return mean_by_word(*occurrence_features(encoder, audio_by_source, occurrences, layers, context_s, device, progress))


def _cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (n_layers, H) pairs -> (n_layers,)."""
    return (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-12)


def semantic_preference(embeddings: dict[str, np.ndarray], pairs: list[tuple[str, str, str]], n_random: int = 200,
                        seed: int = 0) -> dict:
    """Mean cosine per relation and layer, and the preference sim(synonym) − sim(near_homophone).

    embeddings : {word: (n_layers, hidden)}; pairs whose words have no embedding are skipped and counted.
    Returns {"synonym", "near_homophone", "random", "preference"}: (n_layers,) lists, and "n_pairs", "skipped".
    """
    sims = {r: [] for r in RELATIONS}
    skipped = 0
    for a, b, rel in pairs:
        if a in embeddings and b in embeddings:
            sims[rel].append(_cosine(embeddings[a], embeddings[b]))
        else:
            skipped += 1
    empty = [r for r in RELATIONS if not sims[r]]
    if empty:
        raise DataError(f"no {empty} pair has both words in the corpus ({skipped} pairs skipped)")
    words = sorted(embeddings)
    rng = np.random.default_rng(seed)
    rand = [_cosine(embeddings[words[i]], embeddings[words[j]])
            for i, j in rng.integers(0, len(words), (n_random, 2)) if i != j]
    mean = {r: np.mean(sims[r], axis=0) for r in RELATIONS}
    return {"synonym": mean["synonym"].tolist(), "near_homophone": mean["near_homophone"].tolist(),
            "random": np.mean(rand, axis=0).tolist(), "preference": (mean["synonym"] - mean["near_homophone"]).tolist(),
            "n_pairs": {r: len(sims[r]) for r in RELATIONS}, "skipped": skipped}
