"""The downstream tasks of the paper as runnable units: dataset, labels, cached features, probes, result files.

`run_probe_task`, `run_semantic_preference` and `run_story_word_probe` are what `eval_phonemes.py` and `eval_downstream.py` call;
`compare_probe_results` renders several result folders side by side. Result folder: results.json, table.md,
<task>_by_layer.png, config.json (and for `run_probe_task` each layer's layer_<l>.json, read back after a kill).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import downstream_data as dd
import probes
from alignment import relative_change, signed_change, upper_middle_layers, upper_middle_mismatch_note
from atomic_io import write_json_atomic, write_text_atomic
from file_readers import DataError, file_fingerprint, read_tsv
from features import FeatureCache, check_finite_features
from inference import map_inference, prepare_for_inference
from models import SpeechEncoder, hub_revision
from run_utils import (array_digest, check_same_readout, check_same_settings, code_identity, command_line,
                       first_few, package_versions, read_result_json, remove_stale_outputs, result_labels, timestamp)

METRICS = ("f1_macro", "f1_micro", "accuracy")
# the code a layer's probe runs after its features and labels: a change to it makes earlier layer results stale
PROBE_FIT_CODE = ("probes.py",)


class TaskUsageError(ValueError):
    """Options that do not fit the task (the command-line scripts exit 2 with its message)."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task reads and predicts: a reader of the dataset root, the label kind and the feature level."""
    reader: Callable
    kind: str          # multiclass | multilabel
    level: str         # utterance | frame
    label: str         # label | phone_presence | frame_phone
    description: str
    group_by: Callable | None = None  # utterance -> the unit a split holds out (permutation null); None: each utterance
    group_name: str = "utterance"


@dataclass(frozen=True)
class ProbedModel:
    """One model of a probing run: its encoder, name (hub id or path), hidden-state indices, result folder and the hub
    revision it was loaded at (a local folder ignores it)."""
    encoder: SpeechEncoder
    name: str
    layers: list[int]
    out: Path
    revision: str = "main"


def model_config(config: dict | None, model: ProbedModel, models: list[ProbedModel]) -> dict:
    """A result folder's arguments: the run's, with this folder's model (and its hub commit, `hub_revision`) and out,
    and the models probed with it."""
    return {**(config or {}), "model_name": model.name, "model_revision": hub_revision(model.name, model.revision),
            "out": str(model.out), "evaluated_with": [m.name for m in models if m is not model]}


TASKS = {
    "phonemes": TaskSpec(dd.read_timit, "multilabel", "utterance", "phone_presence",
                         "TIMIT: which of the 39 folded phones occur in the utterance (the paper's task)"),
    "phonemes_frame": TaskSpec(dd.read_timit, "multiclass", "frame", "frame_phone",
                               "TIMIT: 39-class phone of each frame (standard frame-level variant)"),
    "sentence_type": TaskSpec(dd.read_timit, "multiclass", "utterance", "label", "TIMIT: SA / SI / SX"),
    "commands": TaskSpec(dd.read_speech_commands, "multiclass", "utterance", "label", "Speech Commands: 35 words"),
    "emotion": TaskSpec(dd.read_crema_d, "multiclass", "utterance", "label", "CREMA-D: 6 emotions, split by actor"),
    "intent": TaskSpec(dd.read_slurp, "multiclass", "utterance", "label", "SLURP: intent (scenario_action)"),
    "action": TaskSpec(lambda root: dd.read_slurp(root, label="action"), "multiclass", "utterance", "label",
                       "SLURP: action"),
    "semantic_category": TaskSpec(dd.read_words, "multiclass", "utterance", "label",
                                  "miniature words: semantic category of unseen words (split by word)",
                                  group_by=lambda u: u.words[0][2], group_name="word"),
}


def task_labels(spec: TaskSpec, utts: list[dd.Utterance]) -> tuple[dict[str, int], Callable]:
    """Class map over all splits and a function utterance -> label(s)."""
    if spec.label == "label":
        classes = dd.label_map(utts)
        return classes, lambda u: classes[u.label]
    classes = {p: i for i, p in enumerate(dd.TIMIT_39)}
    return classes, lambda u: u.segments


def extract_missing_features(spec: TaskSpec, utts: list[dd.Utterance], lengths: list[int], models: list[ProbedModel],
                             caches: list[FeatureCache], frame_step: int, batch_size: int, device, precision: str,
                             progress: bool, threads: int = 1) -> list[set[str]]:
    """Extract and cache the features of each split for the models whose cache lacks it, those models together
    (their shared bottom computed once). Nothing is kept in memory after a split is saved.
    lengths : each utterance's 16 kHz sample count (`drop_short_utterances`).
    Returns per model the splits extracted now (the others were in its cache already)."""
    fresh = [set() for _ in models]
    for split in dd.SPLITS:
        todo = [k for k, (cache, m) in enumerate(zip(caches, models)) if not cache.has(split, m.layers)]
        if not todo:
            continue
        members = [u for u in utts if u.split == split]
        member_lengths = [n for u, n in zip(utts, lengths) if u.split == split]
        todo_models = [models[k] for k in todo]
        if spec.level == "utterance":
            rows_x = _utterance_rows(todo_models, members, member_lengths, batch_size, device, precision, progress,
                                     threads)
        else:
            rows_x = _frame_rows(todo_models, members, member_lengths, frame_step, device, progress, threads,
                                 batch_size)
        for k, (rows, x) in zip(todo, rows_x):
            check_finite_features(x, models[k].layers, models[k].name, f"the {split} split")  # before the cache
            caches[k].save(split, models[k].layers, rows, x)
            fresh[k].add(split)
        del rows_x
    return fresh


def load_task_features(spec: TaskSpec, utts: list[dd.Utterance], model: ProbedModel, cache: FeatureCache,
                       to_label: Callable, classes: dict, fresh: set[str]) -> tuple[dict, dict]:
    """One model's features (n_layers, N, hidden) and labels per split, read from its cache (one model at a time
    in memory: a frame-level TIMIT split of a base model is ~5 GB). fresh : the splits this run extracted (not
    counted as cache hits)."""
    feats, labels = {}, {}
    for split in dd.SPLITS:
        members = [u for u in utts if u.split == split]
        rows, x = cache.load(split, model.layers, count_hit=split not in fresh)
        if spec.level == "utterance":
            y = [to_label(u) for u in members]
            feats[split] = x
            labels[split] = probes.presence_matrix(y, classes) if spec.label == "phone_presence" else np.array(y, np.int64)
            continue
        # rows are in utterance order: split once instead of masking all rows per utterance
        times_per_utt = np.split(rows[:, 1], np.searchsorted(rows[:, 0], np.arange(1, len(members))))
        y = np.concatenate([probes.frame_labels(t, u.segments, classes) for t, u in zip(times_per_utt, members)])
        covered = y >= 0  # frames no segment covers have no label
        feats[split], labels[split] = keep_frames_in_place(x, covered), y[covered]
    return feats, labels


def keep_frames_in_place(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`x[:, keep]` for (n_layers, N, hidden) frame features, moved to the front of `x`'s own buffer one layer at a
    time and returned as a view: a frame-level TIMIT split of a base model is ~5 GB, and a copy would double it."""
    n = int(keep.sum())
    if n == len(keep):
        return x
    for layer in x:  # fancy indexing copies a layer first, so the overlapping assignment is safe
        layer[:n] = layer[keep]
    return x[:, :n]


class _AudioOnDemand:
    """The waveforms of `utts`, each read when indexed: a split of SLURP or Speech Commands is 5-10 GB as float32."""

    def __init__(self, utts: list[dd.Utterance]):
        self.utts = utts

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> np.ndarray:
        return dd.load_utterance_audio(self.utts[i])


def _utterance_rows(models: list[ProbedModel], members: list[dd.Utterance], lengths: list[int], batch_size: int,
                    device, precision: str, progress: bool, threads: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per model (utterance indices (N,), features (n_layers, N, hidden)): mean over each utterance's frames.
    lengths : each member's 16 kHz sample count (`downstream_data.utterance_samples`); audio is read per batch."""
    xs = probes.utterance_features_together([m.encoder for m in models], _AudioOnDemand(members),
                                            [m.layers for m in models], batch_size, device, precision, progress,
                                            threads, lengths=lengths)
    return [(np.arange(len(members), dtype=np.float64), x) for x in xs]


def drop_short_utterances(utts: list[dd.Utterance], progress: bool = True) -> tuple[list[dd.Utterance], list[int], list[str]]:
    """Read every utterance's length from its header (so a missing or unreadable file, or an alignment running past
    its audio, stops the run before any extraction) and leave out those shorter than `downstream_data.MIN_UTTERANCE_S`.

    Returns the kept utterances, their 16 kHz sample counts and the paths of the left-out ones.
    """
    from tqdm import tqdm
    lengths = [dd.utterance_samples(u) for u in tqdm(utts, desc="audio headers", leave=False, disable=not progress)]
    keep = [n >= dd.MIN_UTTERANCE_S * dd.SAMPLE_RATE for n in lengths]
    for u, n, k in zip(utts, lengths, keep):
        if k:  # a left-out (empty or cut-off) recording is recorded as such, not an error
            dd.check_segments_within_audio(u, n)
    return ([u for u, k in zip(utts, keep) if k], [n for n, k in zip(lengths, keep) if k],
            [str(u.path) for u, k in zip(utts, keep) if not k])


def check_input_lengths(models: list[ProbedModel], utts: list[dd.Utterance], lengths: list[int]) -> None:
    """Raise DataError naming the utterances longer than a model takes (Whisper: 30 s), before any extraction."""
    for m in models:
        limit = m.encoder.max_input_samples
        if limit is None:
            continue
        long = [(u, n) for u, n in zip(utts, lengths) if n > limit]
        if long:
            raise DataError(f"{len(long)} utterance(s) longer than the {limit / dd.SAMPLE_RATE:g} s that {m.name} takes: "
                            + ", ".join(f"{u.path} ({n / dd.SAMPLE_RATE:.1f} s)" for u, n in long[:3])
                            + (" ..." if len(long) > 3 else ""))


def _frame_rows(models: list[ProbedModel], members: list[dd.Utterance], lengths: list[int], frame_step: int, device,
                progress: bool, threads: int, batch_size: int = 1,
                mixed_lengths: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per model (rows (n, 2) = utterance index and frame time in s, features (n_layers, n, hidden)) of every
    `frame_step`-th frame of every utterance (utterances side by side in `threads` threads; `batch_size` consecutive
    utterances per forward pass where `probes.mixed_length_batches` allows, Whisper pad30 on a GPU, else one).

    Written into arrays sized from `lengths` (16 kHz sample counts) up front: no per-utterance pieces joined at
    the end, which would hold a split's features twice."""
    encoders = [m.encoder for m in models]
    plan = prepare_for_inference(encoders, device)
    layers = [m.layers for m in models]
    # encoder.frame_count bounds the valid frames of an utterance (SpeechEncoder.valid_frames)
    bounds = [sum(-(-enc.frame_count(n) // frame_step) for n in lengths) for enc in encoders]
    xs = [np.empty((len(m.layers), b, m.encoder.hidden_size), np.float32) for m, b in zip(models, bounds)]
    rows = [np.empty((b, 2)) for b in bounds]
    filled = [0] * len(models)
    step = batch_size if probes.mixed_length_batches(encoders, device, mixed_lengths) else 1
    chunks = [members[i:i + step] for i in range(0, len(members), step)]
    frames = map_inference(lambda us: probes.frame_features_batch(encoders, [dd.load_utterance_audio(u) for u in us],
                                                                  layers, device, plan),
                           chunks, threads, "utterance batches", progress)
    for ui, per_model in enumerate(per_utt for chunk in frames for per_utt in chunk):
        for j, (times, states) in enumerate(per_model):
            keep = np.arange(0, len(times), frame_step)
            a, b = filled[j], filled[j] + len(keep)
            if b > bounds[j]:
                raise RuntimeError(f"{members[ui].path}: {len(times)} frames, more than the "
                                   f"{encoders[j].frame_count(lengths[ui])} its {lengths[ui]} samples give")
            xs[j][:, a:b] = states[:, keep]
            rows[j][a:b] = np.stack([np.full(len(keep), ui), times[keep]], 1)
            filled[j] = b
    return [(r[:n], x[:, :n]) for r, x, n in zip(rows, xs, filled)]


def chance_level(labels: dict, kind: str) -> dict:
    """Accuracy of always predicting the majority train class (multiclass) or the per-class majority (multilabel)."""
    y_tr, y_te = labels["train"], labels["test"]
    if kind == "multiclass":
        return {"accuracy": float(np.mean(y_te == np.bincount(y_tr).argmax())), "n_classes_train": int(len(np.unique(y_tr)))}
    majority = (y_tr.mean(0) > 0.5).astype(np.float32)
    return {"accuracy": float((y_te == majority).mean())}


def layer_probe_keys(task: str, features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     groups: dict[str, np.ndarray] | None, layers: list[int], settings: dict,
                     splits: tuple[str, ...] = dd.SPLITS) -> dict[int, str]:
    """Identity of each layer's probe fit: its features and the labels (and permutation or fold groups) of every
    split, the fit settings (`settings`: kind, classes, seed, permutations or folds, device, `probes.fit_settings`),
    the probe code and the numeric packages. Equal keys give equal results, so a rerun after a kill reads finished
    layers back.

    features[split] : (n_layers, N_split, hidden), layer i of `layers` at index i; `splits` names them (one, "all",
    for a cross-validated probe).
    """
    shared = array_digest(task, settings, code_identity(PROBE_FIT_CODE),
                          *[labels[s] for s in splits], *([groups[s] for s in splits] if groups else []))
    return {l: array_digest(shared, l, *[features[s][i] for s in splits]) for i, l in enumerate(layers)}


def layer_probe_path(out: Path, layer: int) -> Path:
    """OUT/layer_<l>.json: one layer's probe result and its fit key (`write_layer_probe`)."""
    return Path(out) / f"layer_{layer}.json"


def stored_layer_probe(path: Path) -> dict | None:
    """The content of a `write_layer_probe` file ({task, layer, fit_key, result}), else None (absent, cut short,
    not JSON or another program's file)."""
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) and {"task", "fit_key", "result"} <= set(stored) else None


def read_layer_probe(path: Path, key: str) -> dict | None:
    """The layer result stored in `path` by a fit with this key, else None (then the layer is fitted again)."""
    stored = stored_layer_probe(path)
    return stored["result"] if stored is not None and stored["fit_key"] == key else None


def start_layer_probes(out: Path, task: str,
                       keys: dict[int, str]) -> tuple[dict[int, dict], Callable[[int, dict], None]]:
    """Open `out` for a model's per-layer probes: results.json (the mark of a finished result) removed until the run
    writes it again. Returns the layers an earlier run fitted with these keys, read back ({layer: result}; said on
    stderr), and the probes' `on_layer` callback that writes each layer fitted now with its key."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    done = {l: r for l, key in keys.items() if (r := read_layer_probe(layer_probe_path(out, l), key)) is not None}
    if done:
        print(f"note: {out}: layer(s) {sorted(done)} read back from an earlier run with the same inputs, not refitted",
              file=sys.stderr)

    def save_layer(layer: int, result: dict) -> None:
        write_layer_probe(layer_probe_path(out, layer), keys[layer], task, layer, result)
    return done, save_layer


def write_layer_probe(path: Path, key: str, task: str, layer: int, result: dict) -> None:
    """One layer's probe result with its fit key, written atomically as soon as it is fitted."""
    write_json_atomic(path, {"task": task, "layer": layer, "fit_key": key, "result": result})


def model_record(m: ProbedModel) -> dict:
    """results.json's description of the model probed: name, family, layers and, for Whisper, how its encoder read
    the audio (--whisper-mode; --compare checks it within a family)."""
    enc = m.encoder
    return {"model": m.name, "model_type": enc.model_type,
            "whisper_mode": enc.whisper_mode if enc.model_type == "whisper" else None, "layers": m.layers,
            "n_layers": enc.num_layers, "upper_middle_layers": upper_middle_layers(m.layers, enc.num_layers)}


def summarise_probes(task: str, m: ProbedModel, per_layer: dict, extra: dict) -> dict:
    """results.json's content: the model (`model_record`), the per-layer results (keys as strings) and their mean over
    the upper-middle layers for each of METRICS, with `extra` (description, classes, chance, ...) merged in."""
    record = model_record(m)
    um = record["upper_middle_layers"]
    return {"task": task, **record, "per_layer": {str(l): v for l, v in per_layer.items()},
            "upper_middle_mean": {k: float(np.mean([per_layer[l]["test"][k] for l in um])) for k in METRICS}, **extra}


def render_probe_table(result: dict) -> str:
    """table.md: test scores and the chosen weight decay and epoch per layer, the upper-middle mean, chance, and the
    permutation nulls where the run has them."""
    lines = [f"### {result['task']} · {result['model']}", "", "test-split scores per layer (probe chosen on val)", "",
             "| layer | F1 macro | F1 micro | accuracy | weight decay | epochs |", "|---|---|---|---|---|---|"]
    for l, v in result["per_layer"].items():
        t = v["test"]
        lines.append(f"| {l} | {t['f1_macro']:.3f} | {t['f1_micro']:.3f} | {t['accuracy']:.3f} | {v['weight_decay']:g} "
                     f"| {v['epochs']} |")
    um = result["upper_middle_mean"]
    lines.append(f"| upper-middle {result['upper_middle_layers']} | {um['f1_macro']:.3f} | {um['f1_micro']:.3f} "
                 f"| {um['accuracy']:.3f} | | |")
    lines.append(f"\nchance (majority class): accuracy {result['chance']['accuracy']:.3f}; "
                 f"rows: {', '.join(f'{split} {n}' for split, n in result['n_rows'].items())}")
    nulls = {l: v["permutation_null"] for l, v in result["per_layer"].items() if "permutation_null" in v}
    if nulls:
        n = next(iter(nulls.values()))["n"]
        lines += ["", f"chance distribution of the test F1 macro: {n} probes refitted on labels shuffled among the "
                  f"{result.get('permutation_unit') or 'utterance'}s of each split", "",
                  "| layer | F1 macro | null mean ± SD | null 95% range | p (observed above null) |", "|---|---|---|---|---|"]
        lines += [f"| {l} | {result['per_layer'][l]['test']['f1_macro']:.3f} | {v['mean']:.3f} ± {v['sd']:.3f} | "
                  f"{v['range95'][0]:.3f} to {v['range95'][1]:.3f} | {v['p_above']:.3f} |" for l, v in nulls.items()]
        if n < 99:  # p = (1 + nulls at or above) / (1 + n): a score above every null still reads 1/(n + 1)
            lines += ["", f"With {n} permutations p cannot go below {1 / (n + 1):.3g}: --permutations 99 or more "
                          f"to test at 0.01."]
    return "\n".join(lines) + "\n"


def write_run(out: Path, result: dict, config: dict, table: str, plot_name: str, curves: dict, ylabel: str) -> None:
    """A probe result folder: table.md, config.json (with command, finish time, versions), the by-layer plot, and
    results.json last (its presence marks a finished result)."""
    from plotting import plot_layer_curves
    out.mkdir(parents=True, exist_ok=True)
    # results.json marks a finished result (--compare reads it): gone until this one is complete, written last
    (out / "results.json").unlink(missing_ok=True)
    write_text_atomic(out / "table.md", table)
    write_json_atomic(out / "config.json", {**config, "command": command_line(), "finished": timestamp(),
                                             "versions": package_versions()})
    plot_layer_curves(curves, result["layers"], out / plot_name, ylabel, title=result["task"],
                      highlight=result.get("upper_middle_layers"))
    # an earlier result in this folder (other layers, another task) leaves nothing this one did not write
    layer_files = {layer_probe_path(out, l).name for l in result["layers"]
                   if (stored := stored_layer_probe(layer_probe_path(out, l))) and stored["task"] == result["task"]}
    remove_stale_outputs(out, ("layer_*.json", "*_by_layer.png"), layer_files | {plot_name})
    write_json_atomic(out / "results.json", result)
    print(result_line(result, out), flush=True)


def result_line(result: dict, out: Path) -> str:
    """One line for a batch log: the task, the model, its upper-middle scores and where the tables are."""
    scores = ", ".join(f"{k} {v:+.3f}" if k == "preference" else f"{k} {v:.3f}"
                       for k, v in result["upper_middle_mean"].items())
    return (f"{result['task']} · {result['model']}: upper-middle layers {result['upper_middle_layers']}: {scores} "
            f"({out / 'table.md'})")


def probe_fit_flags_problem(task: str, n_permutations: int, weight_decay_fit: str | None) -> str | None:
    """Why --permutations or --weight-decay-fit cannot apply to `task` (checked before any model loads), else None:
    permutations give the chance level of multiclass utterance-level probes; semantic_preference fits no probe."""
    spec = TASKS.get(task)
    if n_permutations and spec is None:
        multiclass = [t for t, s in TASKS.items() if s.kind == "multiclass" and s.level == "utterance"]
        return f"--permutations applies to the multiclass utterance-level probes ({', '.join(multiclass)}), not {task}"
    if n_permutations and (spec.kind != "multiclass" or spec.level != "utterance"):
        return f"--permutations needs a multiclass utterance-level task; {task} is {spec.kind} at the {spec.level} level"
    if weight_decay_fit and task == "semantic_preference":
        return f"--weight-decay-fit applies to tasks that fit probes, not {task}"
    return None


def run_probe_task(task: str, data_root: str, models: list[ProbedModel], cache_dir: Path, frame_step: int = 4,
                   batch_size: int = 16, device="cpu", precision: str = "fp32", seed: int = 0, progress: bool = True,
                   config: dict | None = None, threads: int = 1, n_permutations: int = 0,
                   side_by_side: bool | None = None) -> list[dict]:
    """Features → per-layer probes → results.json, table.md, <task>_by_layer.png, config.json in each model's out.

    Several models are probed on the same data and labels, their shared bottom computed once; each model's
    results equal a run of it alone. threads: inference threads (`inference.map_inference`; same numbers).
    n_permutations > 0: each layer's test F1 macro also gets its chance distribution from that many probes
    refitted on labels shuffled among the task's held-out units (`probes.permutation_null`; multiclass
    utterance tasks only). side_by_side: how the probes' weight decays are fitted (`probes.fits_side_by_side`).
    """
    spec = TASKS[task]
    if n_permutations and (problem := probe_fit_flags_problem(task, n_permutations, None)):
        raise TaskUsageError(problem)
    utts, lengths, skipped = drop_short_utterances(spec.reader(data_root), progress)
    if skipped:
        print(f"note: {len(skipped)} utterance(s) shorter than {dd.MIN_UTTERANCE_S} s left out (recorded in "
              f"results.json): {first_few(skipped)}", file=sys.stderr)
    check_input_lengths(models, utts, lengths)
    counts = dd.check_splits(utts, str(data_root))
    classes, to_label = task_labels(spec, utts)
    # which files (each one's size and modification time: file_fingerprint), how long, in which split: a dataset
    # rebuilt or changed on disk, even with the same names and lengths, is not read back from an older cache
    listing = "\n".join(f"{os.path.relpath(u.path, data_root)}|{n}|{u.split}|{file_fingerprint(u.path)}"
                        for u, n in zip(utts, lengths))
    results, caches = [], []
    for m in models:
        settings = {"dataset": str(Path(data_root).resolve()),
                    "utterances": hashlib.sha1(listing.encode()).hexdigest()[:16],
                    "reader": task if spec.reader is not dd.read_timit else "timit", "level": spec.level,
                    "frame_step": frame_step if spec.level == "frame" else None,
                    "bf16": spec.level != "frame" and probes.uses_bf16(precision, device),  # frame features: fp32
                    "whisper_mode": getattr(m.encoder, "whisper_mode", None) if m.encoder.model_type == "whisper" else None}
        caches.append(FeatureCache(cache_dir, m.name, settings, m.revision))
    fresh = extract_missing_features(spec, utts, lengths, models, caches, frame_step, batch_size, device, precision,
                                     progress, threads)
    groups = None if spec.group_by is None else {
        split: np.array([spec.group_by(u) for u in utts if u.split == split]) for split in dd.SPLITS}
    for m, cache, extracted in zip(models, caches, fresh):
        x, y = load_task_features(spec, utts, m, cache, to_label, classes, extracted)
        fit = probes.fit_settings(device, side_by_side)
        keys = layer_probe_keys(task, x, y, groups if n_permutations else None, m.layers, {
            "kind": spec.kind, "classes": list(classes), "seed": seed, "permutations": n_permutations,
            "device": torch.device(device).type, **fit})
        done, save_layer = start_layer_probes(m.out, task, keys)
        per_layer = probes.run_layer_probes(
            x, y, m.layers, spec.kind, len(classes), seed=seed, device=device, progress=progress,
            n_permutations=n_permutations, groups=groups, side_by_side=side_by_side, done=done, on_layer=save_layer)
        n_rows = {s: int(len(y[s])) for s in dd.SPLITS}
        chance = chance_level(y, spec.kind)
        del x, y  # released before the next model's features are read
        result = summarise_probes(task, m, per_layer, {
            "description": spec.description, "kind": spec.kind, "classes": list(classes), "utterances": counts,
            "permutation_unit": spec.group_name if n_permutations else None,
            "n_rows": n_rows, "chance": chance, "frame_step": frame_step if spec.level == "frame" else None,
            "skipped_utterances": {"shorter_than_s": dd.MIN_UTTERANCE_S, "files": skipped},
            "feature_cache_hits": cache.hits})
        curves = {k: {Path(m.name).name: [per_layer[l]["test"][k] for l in m.layers]} for k in ("f1_macro", "accuracy")}
        write_run(m.out, result, {"args": model_config(config, m, models), "feature_cache": str(cache.folder),
                                  "probe_fit": fit, "layers_reused": sorted(done)},
                  render_probe_table(result), f"{task}_by_layer.png", curves, "test score")
        results.append(result)
    return results


def run_semantic_preference(models: list[ProbedModel], words_by_source: dict, audio_loader: Callable, pairs_file: str,
                            context_s: float = 3.0, max_per_word: int = 10, device="cpu", seed: int = 0,
                            progress: bool = True, config: dict | None = None, threads: int = 1) -> list[dict]:
    """Word segments → per-layer word vectors → semantic preference; writes each model's result folder."""
    from semantic_preference import (RELATIONS, mean_by_word, occurrence_features_together, read_pairs,
                                     semantic_preference, word_occurrences)
    pairs = read_pairs(pairs_file)
    vocab = {w for a, b, _ in pairs for w in (a, b)}
    occ = word_occurrences(words_by_source, vocab, max_per_word)
    # named before the extraction: e.g. the default English pairs on a corpus of other words
    if unusable := [r for r in RELATIONS if not any(rel == r and a in occ and b in occ for a, b, rel in pairs)]:
        absent, n = sorted(vocab - set(occ)), len(words_by_source)
        raise DataError(f"{pairs_file}: no {' or '.join(unusable)} pair has both words in the corpus's word alignments "
                        f"({n} recording{'s' * (n != 1)}); {len(absent)} of its {len(vocab)} words never occur, "
                        f"e.g. {absent[:5]} (--pairs: a list of words the corpus holds)")
    audio = {src: audio_loader(src) for src in sorted({s for o in occ.values() for s, _, _ in o})}
    words, feats = occurrence_features_together([m.encoder for m in models], audio, occ, [m.layers for m in models],
                                                context_s, device, progress, threads)
    for m, x in zip(models, feats):
        check_finite_features(x, m.layers, m.name, "the word segments")
    results = []
    for m, x in zip(models, feats):
        emb = mean_by_word(words, x)
        pref = semantic_preference(emb, pairs, seed=seed)
        per_layer = {str(l): {k: pref[k][i] for k in ("synonym", "near_homophone", "random", "preference")}
                     for i, l in enumerate(m.layers)}
        record = model_record(m)
        um = record["upper_middle_layers"]
        result = {"task": "semantic_preference", **record, "per_layer": per_layer,
                  "upper_middle_mean": {"preference": float(np.mean([per_layer[str(l)]["preference"] for l in um]))},
                  "n_pairs": pref["n_pairs"], "skipped_pairs": pref["skipped"], "words_found": len(emb),
                  "pairs_file": str(pairs_file), "context_s": context_s, "max_per_word": max_per_word,
                  "corpus": (config or {}).get("corpus")}
        lines = [f"### semantic preference · {m.name}", "",
                 "mean cosine per layer; preference = synonym − near-homophone", "",
                 "| layer | synonym | near-homophone | random | preference |", "|---|---|---|---|---|"]
        for l, v in per_layer.items():
            lines.append(f"| {l} | {v['synonym']:.3f} | {v['near_homophone']:.3f} | {v['random']:.3f} "
                         f"| {v['preference']:+.3f} |")
        lines.append(f"| upper-middle {um} | | | | {result['upper_middle_mean']['preference']:+.3f} |")
        lines.append(f"\npairs used: {pref['n_pairs']}, skipped (word not in corpus): {pref['skipped']}")
        curves = {"preference": {Path(m.name).name: [per_layer[str(l)]["preference"] for l in m.layers]}}
        write_run(m.out, result, {"args": model_config(config, m, models)}, "\n".join(lines) + "\n",
                  "semantic_preference_by_layer.png", curves, "sim(syn) − sim(homophone)")
        results.append(result)
    return results


def read_word_labels(path: str | Path) -> dict[str, str]:
    """TSV with header `word label` (e.g. a semantic category per word) -> {word (lower case): label}."""
    labels = {}
    for i, row in read_tsv(path, ["word", "label"]):
        if len(row) != 2 or not row[0] or not row[1]:
            raise DataError(f"{path}, line {i}: expected word<TAB>label, found {row}")
        if labels.setdefault(row[0].lower(), row[1]) != row[1]:
            raise DataError(f"{path}, line {i}: word {row[0]!r} labelled twice "
                            f"({labels[row[0].lower()]!r}, {row[1]!r})")
    return labels


def run_story_word_probe(models: list[ProbedModel], words_by_source: dict, audio_loader: Callable, labels_file: str,
                         context_s: float = 3.0, max_per_word: int = 5, n_folds: int = 6, device="cpu", seed: int = 0,
                         progress: bool = True, config: dict | None = None, threads: int = 1,
                         side_by_side: bool | None = None) -> list[dict]:
    """Label of story words in context (e.g. semantic category), probed per layer on words the probe never saw.

    Word segments come from the stories' alignments with `context_s` s of preceding audio (as for semantic
    preference); folds are made of whole words, so the probe must generalise the label to new words.
    Writes each model's result folder. side_by_side: as in `run_probe_task`.
    """
    from semantic_preference import context_label_counts, occurrence_features_together, word_occurrences
    label_of = read_word_labels(labels_file)
    occ = word_occurrences(words_by_source, set(label_of), max_per_word)
    classes = {c: i for i, c in enumerate(sorted({label_of[w] for w in occ}))}
    if len(classes) < 2 or len(occ) < n_folds:
        raise DataError(f"{labels_file}: only {len(occ)} labelled words ({len(classes)} labels) occur in the stories; "
                        f"need ≥ 2 labels and ≥ {n_folds} words")
    audio = {src: audio_loader(src) for src in sorted({s for o in occ.values() for s, _, _ in o})}
    words, feats = occurrence_features_together([m.encoder for m in models], audio, occ, [m.layers for m in models],
                                                context_s, device, progress, threads)
    for m, x in zip(models, feats):
        check_finite_features(x, m.layers, m.name, "the word segments")
    words = np.array(words)
    y = np.array([classes[label_of[w]] for w in words], np.int64)
    # the same probe and folds on the labels of the preceding words alone: what following the topic would score
    counts = context_label_counts(words_by_source, occ, label_of, classes, context_s)
    baseline = probes.cross_validated_probes(counts[None], y, words, [0], len(classes), n_folds, seed, device=device,
                                             progress=False, side_by_side=side_by_side)[0]
    mean_context_words = float(counts.sum(axis=1).mean())
    majority = np.bincount(y).max() / len(y)
    fit = probes.fit_settings(device, side_by_side)
    results = []
    for m, x in zip(models, feats):
        keys = layer_probe_keys("story_word_category", {"all": x}, {"all": y}, {"all": words}, m.layers, {
            "kind": "multiclass", "classes": list(classes), "seed": seed, "folds": n_folds,
            "device": torch.device(device).type, **fit}, splits=("all",))
        done, save_layer = start_layer_probes(m.out, "story_word_category", keys)
        per_layer = probes.cross_validated_probes(
            x, y, words, m.layers, len(classes), n_folds, seed, device=device, progress=progress,
            side_by_side=side_by_side, done=done, on_layer=save_layer)
        result = summarise_probes("story_word_category", m, per_layer, {
            "description": "label of story words in context, cross-validated by word", "kind": "multiclass",
            "classes": list(classes), "n_words": len(occ), "n_occurrences": int(len(words)), "n_folds": n_folds,
            "context_s": context_s, "max_per_word": max_per_word, "labels_file": str(labels_file),
            "corpus": (config or {}).get("corpus"),
            "context_label_baseline": {"test": baseline["test"], "sem": baseline["sem"],
                                       "mean_context_words": mean_context_words},
            "chance": {"accuracy": float(majority), "f1_macro_uniform_guess": 1.0 / len(classes)}})
        lines = [f"### story_word_category · {m.name}", "",
                 f"test scores per layer, mean ± SEM over {n_folds} folds of held-out words (probe chosen on another "
                 f"fold)", "", "| layer | F1 macro | accuracy |", "|---|---|---|"]
        for l, v in per_layer.items():
            lines.append(f"| {l} | {v['test']['f1_macro']:.3f} ± {v['sem']['f1_macro']:.3f} | "
                         f"{v['test']['accuracy']:.3f} ± {v['sem']['accuracy']:.3f} |")
        um = result["upper_middle_mean"]
        lines.append(f"| upper-middle {result['upper_middle_layers']} | {um['f1_macro']:.3f} | {um['accuracy']:.3f} |")
        lines.append(f"| context-label baseline | {baseline['test']['f1_macro']:.3f} ± {baseline['sem']['f1_macro']:.3f} "
                     f"| {baseline['test']['accuracy']:.3f} ± {baseline['sem']['accuracy']:.3f} |")
        lines.append(f"\n{len(occ)} words, {len(words)} occurrences, {len(classes)} labels; chance: F1 macro of a "
                     f"uniform guess {1 / len(classes):.3f}, majority accuracy {majority:.3f}. Context-label baseline: "
                     f"the same probe on the counts of the labels of the words in the {context_s:g} s before each word "
                     f"(no audio, {mean_context_words:.1f} words on average): what tracking the context's labels scores")
        curves = {k: {Path(m.name).name: [per_layer[l]["test"][k] for l in m.layers]} for k in ("f1_macro", "accuracy")}
        write_run(m.out, result, {"args": model_config(config, m, models), "probe_fit": fit,
                                  "layers_reused": sorted(done)},
                  "\n".join(lines) + "\n", "story_word_category_by_layer.png", curves, "test score (held-out words)")
        results.append(result)
    return results


# results.json keys that results compared must share -> how an error names them
COMPARED_PROBE_SETTINGS = {"corpus": "--corpus", "utterances": "utterances", "classes": "classes", "n_words": "words",
                           "n_occurrences": "word occurrences", "n_pairs": "pairs", "words_found": "words found",
                           "context_s": "--context", "max_per_word": "--max-per-word", "n_folds": "--folds",
                           "frame_step": "--frame-step"}


def compare_probe_results(dirs: list[Path], out: Path, labels: list[str] | None = None) -> dict:
    """Side-by-side upper-middle scores of several result folders of the same task (first = reference); the models
    named by `labels` or else by their folders (`run_utils.result_labels`)."""
    from plotting import plot_layer_curves
    results = [read_result_json(d, "results.json", "probe", ("task", "layers", "upper_middle_mean", "per_layer"),
                                number_maps=("upper_middle_mean",), objects=("per_layer",)) for d in dirs]
    if len({r["task"] for r in results}) != 1:
        found = ", ".join(f"{r['task']} in {d}" for d, r in zip(dirs, results))
        raise ValueError(f"--compare needs result folders of one task; found {found}")
    # one dataset (split sizes, labels, words and pairs found) probed alike (the word segments' --context,
    # --max-per-word, --folds; the frames' --frame-step); a key an older result lacks is not checked
    check_same_settings(dirs, results, COMPARED_PROBE_SETTINGS,
                        "--compare needs results on the same data, probed with the same settings")
    check_same_readout(dirs, results, {"whisper_mode": "--whisper-mode"})
    names = result_labels(dirs, labels)
    metric_names = list(results[0]["upper_middle_mean"])
    ref = results[0]["upper_middle_mean"]
    lines = [f"### {results[0]['task']}: upper-middle-layer means (Δ% vs {names[0]})", "",
             "| model | " + " | ".join(f"{m} | Δ%" for m in metric_names) + " |", "|---|" + "---|---|" * len(metric_names)]
    table = {"task": results[0]["task"], "models": names, "upper_middle_mean": {}, "change_vs_first_pct": {}}
    for name, r in zip(names, results):
        um = r["upper_middle_mean"]
        table["upper_middle_mean"][name] = um
        table["change_vs_first_pct"][name] = {m: relative_change(um[m], ref[m]) for m in metric_names}
        lines.append(f"| {name} | " + " | ".join(f"{um[m]:.3f} | {signed_change(relative_change(um[m], ref[m]))}"
                                                 for m in metric_names) + " |")
    table["upper_middle_layers"] = {n: r.get("upper_middle_layers") for n, r in zip(names, results)}
    if (note := upper_middle_mismatch_note(table["upper_middle_layers"])) is not None:
        lines += ["", note]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.md", text)
    write_json_atomic(out / "comparison.json", table)
    layers = sorted({int(l) for r in results for l in r["layers"]})  # a layer some model lacks: a gap in its curve
    key = metric_names[0]
    value = (lambda r, l: r["per_layer"][str(l)]["test"][key]) if "test" in next(iter(results[0]["per_layer"].values())) \
        else (lambda r, l: r["per_layer"][str(l)][key])
    curves = {key: {n: [value(r, l) if str(l) in r["per_layer"] else np.nan for l in layers] for n, r in zip(names, results)}}
    plot_layer_curves(curves, layers, out / f"{results[0]['task']}_by_layer.png", key,
                      highlight=results[0].get("upper_middle_layers"))
    print(text)
    return table
