"""Linear probes on frozen speech-model layers: pooled features, probe fitting with validation-only selection, metrics.

SPEC-methods.md §5. Features are computed once per (model, dataset, settings) and cached with
`features.FeatureCache`. A probe is a linear layer on standardised features trained with Adam; its weight
decay and number of epochs are chosen on the validation split only: the test split enters once, at scoring.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from alignment import mean_sem
from inference import hidden_states_together, pooled_over_batches, prepare_for_inference
from models import SpeechEncoder, masked_mean

TASK_KINDS = ("multiclass", "multilabel")
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


# ----------------------------------------------------------------------------------------------- features
def _batches_by_length(lengths: list[int], batch_size: int, any_length: bool = False) -> list[list[int]]:
    """Indices grouped by equal length (no padding: group-norm models change with padding), then chunked.

    any_length : the models pad every input to a fixed length themselves (Whisper pad30), so utterances of any
        lengths share a batch: indices sorted by length, then chunked.
    """
    if any_length:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    return [g[i:i + batch_size] for _, g in sorted(groups.items()) for i in range(0, len(g), batch_size)]


def mixed_length_batches(encoders: list[SpeechEncoder], device, choice: bool | None = None) -> bool:
    """Whether utterances of different lengths share a forward pass: only where every model pads its input to a
    fixed length itself (Whisper pad30), and by default (`choice` None) only on a GPU: on 2 CPU cores batches of 8
    mixed lengths took 1.3x as long as one utterance per pass (bench/bench_utterances.py)."""
    if not all(e.pads_to_fixed_length for e in encoders):
        return False
    return torch.device(device).type != "cpu" if choice is None else choice


def _padded_batch(wavs: list[np.ndarray]) -> torch.Tensor:
    """(B, longest) float32 waveforms, each zero-padded at its end."""
    batch = np.zeros((len(wavs), max(len(w) for w in wavs)), np.float32)
    for row, w in enumerate(wavs):
        batch[row, :len(w)] = w
    return torch.from_numpy(batch)


def uses_bf16(precision: str, device) -> bool:
    """Whether utterance features run under bf16 autocast: asked for and on CUDA (on a CPU they stay fp32)."""
    return precision == "bf16" and torch.device(device).type == "cuda"


def utterance_features(encoder: SpeechEncoder, wavs: list[np.ndarray], layers: list[int], batch_size: int = 16,
                       device="cpu", precision: str = "fp32", progress: bool = True, threads: int = 1,
                       mixed_lengths: bool | None = None) -> np.ndarray:
    """Mean over each utterance's real-audio frames, per layer.

    wavs : 16 kHz float32 waveforms of any lengths (Whisper: ≤ 30 s in pad30 mode).
    Returns (n_layers, n_utterances, hidden) float32.
    """
    return utterance_features_together([encoder], wavs, [layers], batch_size, device, precision, progress,
                                       threads, mixed_lengths=mixed_lengths)[0]


def utterance_features_together(encoders: list[SpeechEncoder], wavs, layers: list[list[int]],
                                batch_size: int = 16, device="cpu", precision: str = "fp32",
                                progress: bool = True, threads: int = 1, lengths: list[int] | None = None,
                                mixed_lengths: bool | None = None) -> list[np.ndarray]:
    """`utterance_features` of several models, the bottom they share computed once (inference.hidden_states_together).

    wavs : a sequence of 16 kHz waveforms; with `lengths` (their sample counts) it is indexed only batch by batch,
        so a sequence that reads each file when indexed keeps a batch in memory, not a whole dataset split.
    layers : per encoder, the hidden-state indices. Encoders are put in eval mode, without gradients, on `device`.
    threads : batches run side by side in this many threads (`inference.map_inference`; same numbers).
    Returns per encoder (n_layers, n_utterances, hidden) float32.

    Utterances of equal length share a batch; with `mixed_lengths` (`mixed_length_batches`: Whisper pad30, by
    default on a GPU) utterances of any lengths do, zero-padded to the longest of the batch (the same numbers as alone).
    """
    plan = prepare_for_inference(encoders, device)
    lengths = [len(w) for w in wavs] if lengths is None else lengths
    batches = _batches_by_length(lengths, batch_size, any_length=mixed_length_batches(encoders, device, mixed_lengths))
    use_bf16 = uses_bf16(precision, device)

    def waveform(i: int) -> np.ndarray:
        wav = wavs[i]
        if len(wav) != lengths[i]:
            raise ValueError(f"utterance {i}: {len(wav)} samples read, {lengths[i]} expected")
        return wav

    @torch.inference_mode()
    def pooled(idx: list[int]) -> list[list[np.ndarray]]:
        n = [lengths[i] for i in idx]
        batch = _padded_batch([waveform(i) for i in idx]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            results = hidden_states_together(encoders, batch, layers, plan)
        return [[masked_mean(s.float(), enc.valid_frames(n, valid.shape, valid.device)).cpu().numpy() for s in states]
                for enc, (states, valid) in zip(encoders, results)]

    return pooled_over_batches(encoders, layers, len(wavs), pooled, batches, threads, "utterances", progress)


def frame_features(encoder: SpeechEncoder, wav: np.ndarray, layers: list[int], device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Hidden states of every real-audio frame of one utterance.

    Returns times (frames,) frame centres in seconds and states (n_layers, frames, hidden) float32.
    """
    return frame_features_together([encoder], wav, [layers], device)[0]


def frame_features_together(encoders: list[SpeechEncoder], wav: np.ndarray, layers: list[list[int]], device="cpu",
                            plan: list | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`frame_features` of several models on one utterance, their shared bottom computed once.

    plan : `inference.prepare_for_inference(encoders, device)` (pass it when calling per utterance; without it the
        encoders are prepared here). Returns per encoder (times, states) as `frame_features`.
    """
    return frame_features_batch(encoders, [wav], layers, device, plan)[0]


@torch.inference_mode()
def frame_features_batch(encoders: list[SpeechEncoder], wavs: list[np.ndarray], layers: list[list[int]], device="cpu",
                         plan: list | None = None) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """`frame_features_together` of several utterances in one forward pass: per utterance, per encoder (times, states).

    Utterances of different lengths only where every encoder pads its input to a fixed length itself (Whisper pad30):
    zero-padded to the longest, each keeps its own real-audio frames (the same numbers as alone).
    """
    lengths = [len(w) for w in wavs]
    if len(set(lengths)) > 1 and not all(e.pads_to_fixed_length for e in encoders):
        raise ValueError(f"utterances of lengths {sorted(set(lengths))} in one batch: only models that pad every "
                         f"input to a fixed length (Whisper pad30) give the same frames as each alone")
    if plan is None:
        plan = prepare_for_inference(encoders, device)
    results = hidden_states_together(encoders, _padded_batch(wavs).to(device), layers, plan)
    out = [[] for _ in wavs]
    for enc, (states, valid) in zip(encoders, results):
        valid = enc.valid_frames(lengths, valid.shape)
        for row in range(len(wavs)):
            n = int(valid[row].sum())
            times = (np.arange(n) + 0.5) / enc.frame_rate()
            out[row].append((times, np.stack([s[row, :n].float().cpu().numpy() for s in states])))
    return out


def segment_mean(times: np.ndarray, states: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """Mean of the frames whose centres fall in [start_s, end_s) (the nearest frame if none): (n_layers, hidden)."""
    inside = (times >= start_s) & (times < end_s)
    if not inside.any():
        inside = np.zeros(len(times), bool)
        inside[int(np.argmin(np.abs(times - (start_s + end_s) / 2)))] = True
    return states[:, inside].mean(axis=1)


def frame_labels(times: np.ndarray, segments: list[tuple[float, float, str]], classes: dict[str, int]) -> np.ndarray:
    """Class index of the segment covering each frame centre (-1 where none does): (frames,) int64."""
    labels = np.full(len(times), -1, np.int64)
    for a, b, name in segments:
        labels[(times >= a) & (times < b)] = classes[name]
    return labels


def presence_matrix(segment_lists: list[list], classes: dict[str, int]) -> np.ndarray:
    """(n_utterances, n_classes) 0/1: which classes occur in each utterance (the paper's phoneme task)."""
    y = np.zeros((len(segment_lists), len(classes)), np.float32)
    for i, segs in enumerate(segment_lists):
        for _, _, name in segs:
            y[i, classes[name]] = 1.0
    return y


# ----------------------------------------------------------------------------------------------- metrics
def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2·tp / (2·tp + fp + fn), 0 where a class was neither true nor predicted."""
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)


def probe_metrics(y_true: np.ndarray, y_pred: np.ndarray, kind: str) -> dict:
    """F1 macro, F1 micro and accuracy (sklearn's definitions with zero_division=0; numpy, ~100x faster to call).

    multiclass : y (N,) class indices; macro over the classes that are true or predicted; accuracy = share of
                 exact matches (= F1 micro).
    multilabel : y (N, C) 0/1; macro over the classes that occur in y_true (0.0 if none); F1 micro over all (utterance, class)
                 decisions; accuracy = share of correct decisions.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if kind == "multiclass":
        classes, inverse = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
        t, p = inverse[:len(y_true)], inverse[len(y_true):]
        tp = np.bincount(t[t == p], minlength=len(classes)).astype(np.float64)
        fp = np.bincount(p, minlength=len(classes)) - tp
        fn = np.bincount(t, minlength=len(classes)) - tp
        accuracy = float(np.mean(t == p))
        return {"f1_macro": float(_f1(tp, fp, fn).mean()), "f1_micro": accuracy, "accuracy": accuracy}
    t, p = y_true > 0.5, y_pred > 0.5
    tp, fp, fn = (t & p).sum(0).astype(np.float64), (~t & p).sum(0), (t & ~p).sum(0)
    present = t.sum(0) > 0  # macro over classes that occur in this split (0 if none does)
    return {"f1_macro": float(_f1(tp[present], fp[present], fn[present]).mean()) if present.any() else 0.0,
            "f1_micro": float(_f1(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0]),
            "accuracy": float((t == p).mean())}


# ----------------------------------------------------------------------------------------------- probes
@dataclass
class LinearProbe:
    """A fitted probe: standardisation, weights and the validation choices that produced it."""
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray        # (hidden, n_classes)
    bias: np.ndarray          # (n_classes,)
    kind: str
    weight_decay: float
    epochs: int
    val_f1_macro: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.decision(x)
        return z.argmax(1) if self.kind == "multiclass" else (z > 0).astype(np.float32)


def fit_linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, kind: str,
                     n_classes: int, weight_decays=DEFAULT_WEIGHT_DECAYS, max_epochs: int = 60, eval_every: int = 5,
                     lr: float = 1e-2, batch_size: int = 1024, seed: int = 0, device="cpu",
                     side_by_side: bool | None = None) -> LinearProbe:
    """Train linear probes (Adam, cross-entropy or binary cross-entropy) and keep the best on validation F1 macro.

    Only (x_train, y_train) are fitted and only (x_val, y_val) choose the weight decay and the epoch; the
    function never sees test data. Deterministic for a given seed. Every weight decay starts from the same
    initialisation and sees the same mini-batches; the first best (weight decays in order, then epochs) is kept.

    side_by_side : fit all weight decays at once, as slices of one stacked layer (the same fits up to rounding:
        other matrix shapes), instead of one after another (bit-identical to earlier runs). Default (None): on a
        GPU only (`fits_side_by_side`).
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}, found {kind!r}")
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"probe needs train and validation rows (found {len(x_train)} and {len(x_val)})")
    side_by_side = fits_side_by_side(side_by_side, device)
    mean = x_train.mean(0)
    std = x_train.std(0) + 1e-6
    xt = torch.as_tensor((x_train - mean) / std, dtype=torch.float32, device=device)
    xv = (x_val - mean) / std
    yt = torch.as_tensor(y_train, dtype=torch.long if kind == "multiclass" else torch.float32, device=device)
    best = None
    for group in ([list(weight_decays)] if side_by_side else [[wd] for wd in weight_decays]):
        for wd, epoch, f1, w, b in _fit_weight_decays(xt, yt, xv, y_val, kind, n_classes, group, max_epochs,
                                                       eval_every, lr, batch_size, seed, device):
            if best is None or f1 > best.val_f1_macro:
                best = LinearProbe(mean, std, w, b, kind, wd, epoch, f1)
    return best


# read once from the signature (the one place they are written), before anything can wrap the function
_FIT_DEFAULTS = {k: inspect.signature(fit_linear_probe).parameters[k].default
                 for k in ("weight_decays", "max_epochs", "eval_every", "lr", "batch_size")}


def fits_side_by_side(side_by_side: bool | None, device) -> bool:
    """Whether the weight decays are fitted side by side: `side_by_side` when given, else on a GPU only. There
    each small step's fixed cost, not its arithmetic, sets the time (bench/RESULTS.md, H200: 3.7x); on a CPU
    it is 2.3x too (2-core Xeon), but one after another keeps earlier CPU runs' numbers bit for bit."""
    return torch.device(device).type == "cuda" if side_by_side is None else bool(side_by_side)


def fit_settings(device, side_by_side: bool | None = None) -> dict:
    """`fit_linear_probe`'s fixed settings and how the weight decays are fitted on `device` (config.json's
    probe_fit): what a probe result depends on besides its features and labels."""
    settings = dict(_FIT_DEFAULTS, weight_decays=list(_FIT_DEFAULTS["weight_decays"]))
    settings["weight_decays_fitted"] = ("side by side" if fits_side_by_side(side_by_side, device)
                                        else "one after another")
    return settings


def _fit_weight_decays(xt: torch.Tensor, yt: torch.Tensor, xv: np.ndarray, y_val: np.ndarray, kind: str,
                       n_classes: int, weight_decays: list[float], max_epochs: int, eval_every: int, lr: float,
                       batch_size: int, seed: int, device) -> list[tuple]:
    """Fit one probe per weight decay as slices of one (hidden, K * n_classes) layer; AdamW's decoupled decay per
    slice. Returns, weight decay by weight decay, its first best (wd, epoch, val F1 macro, weight, bias)."""
    k = len(weight_decays)
    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(xt.shape[1], k * n_classes).to(device)
    with torch.no_grad():
        layer.weight.copy_((torch.randn((n_classes, xt.shape[1]), generator=gen) * 0.01).repeat(k, 1))
        layer.bias.zero_()
    # AdamW multiplies each parameter by (1 - lr * wd) before its Adam update: done here per slice (same value,
    # computed in double and rounded once, as AdamW's scalar is), then AdamW without decay of its own
    decay = torch.tensor([1 - lr * wd for wd in weight_decays], dtype=torch.float64).to(torch.float32)
    decay = decay.repeat_interleave(n_classes).to(device)
    decays = bool((decay != 1).any())  # weight decay 0 alone: nothing to multiply on each step
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss() if kind == "multiclass" else torch.nn.BCEWithLogitsLoss()

    def loss(logits, target):
        if k == 1:
            return loss_fn(logits, target)
        if kind == "multiclass":  # (B, C, K) against (B, K): the mean over B * K, times K = the sum of K batch means
            return loss_fn(logits.view(len(target), k, n_classes).transpose(1, 2), target[:, None].expand(-1, k)) * k
        return loss_fn(logits, target.repeat(1, k)) * k
    best: list[tuple | None] = [None] * k
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss(layer(xt[idx]), yt[idx]).backward()
            if decays:
                with torch.no_grad():
                    layer.weight.mul_(decay[:, None])
                    layer.bias.mul_(decay)
            opt.step()
        if epoch % eval_every and epoch != max_epochs:
            continue
        w_all = layer.weight.detach().cpu().numpy().T.astype(np.float64)
        b_all = layer.bias.detach().cpu().numpy().astype(np.float64)
        z_all = xv @ w_all + b_all
        for j in range(k):
            cols = slice(j * n_classes, (j + 1) * n_classes)
            z = z_all[:, cols]
            pred = z.argmax(1) if kind == "multiclass" else (z > 0).astype(np.float32)
            f1 = probe_metrics(y_val, pred, kind)["f1_macro"]
            if best[j] is None or f1 > best[j][2]:
                best[j] = (weight_decays[j], epoch, f1, w_all[:, cols].copy(order="K"), b_all[cols].copy())
    return best


def run_layer_probes(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], layers: list[int], kind: str,
                     n_classes: int, seed: int = 0, device="cpu", progress: bool = True, n_permutations: int = 0,
                     groups: dict[str, np.ndarray] | None = None, done: dict | None = None,
                     on_layer: Callable[[int, dict], None] | None = None, **probe_kwargs) -> dict:
    """Fit one probe per layer on train, select on val, score once on test.

    features[split] : (n_layers, N_split, hidden); labels[split] : (N_split,) or (N_split, C).
    n_permutations > 0 (multiclass): also the test F1 macro's chance distribution per layer (`permutation_null`,
    labels shuffled among `groups[split]`, default one group per row), summarised by `null_summary`.
    done : {layer: result} of layers already fitted on these inputs (read back after a kill): taken, not refitted.
    on_layer : called with (layer, result) after each layer fitted here (to save it before the next one).
    Returns {layer: {"test": metrics, "val": metrics, "weight_decay", "epochs"[, "permutation_null"]}}.
    """
    out = {}
    for li, layer in enumerate(tqdm(layers, desc="probes", leave=False, disable=not progress)):
        if done and layer in done:  # each layer's fit is seeded on its own, so skipping one changes no other
            out[layer] = done[layer]
            continue
        probe = fit_linear_probe(features["train"][li], labels["train"], features["val"][li], labels["val"], kind,
                                 n_classes, seed=seed, device=device, **probe_kwargs)
        out[layer] = {"test": probe_metrics(labels["test"], probe.predict(features["test"][li]), kind),
                      "val": probe_metrics(labels["val"], probe.predict(features["val"][li]), kind),
                      "weight_decay": probe.weight_decay, "epochs": probe.epochs}
        if n_permutations > 0:
            null = permutation_null({s: x[li] for s, x in features.items()}, labels, groups, n_classes,
                                    n_permutations, seed=seed, device=device, **probe_kwargs)
            out[layer]["permutation_null"] = null_summary(null, out[layer]["test"]["f1_macro"])
        if on_layer is not None:
            on_layer(layer, out[layer])
    return out


def permutation_null(features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     groups: dict[str, np.ndarray] | None, n_classes: int, n_permutations: int, seed: int = 0,
                     device="cpu", **probe_kwargs) -> np.ndarray:
    """Test F1 macro of multiclass probes refitted (train, chosen on val) on shuffled labels: the chance
    distribution of `run_layer_probes`' test score for these features and splits.

    Labels are shuffled among the groups of each split, one label per group (e.g. per word when the probe is
    scored on unseen words), so each split keeps its class counts and a group's rows keep one label.

    Parameters
    ----------
    features : {split: (N_split, hidden)} of one layer.
    labels : {split: (N_split,)} int class indices, the same for all rows of a group.
    groups : {split: (N_split,)} group keys, or None (each row its own group).

    Returns
    -------
    (n_permutations,) test F1 macro, in permutation order (deterministic for a seed).
    """
    rng = np.random.default_rng(seed)
    keyed = {}
    for split, y in labels.items():
        g = np.arange(len(y)) if groups is None else np.asarray(groups[split])
        _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
        if not (y[first][inverse] == y).all():
            row = int(np.flatnonzero(y[first][inverse] != y)[0])
            found = sorted({int(v) for v in y[inverse == inverse[row]]})
            raise ValueError(f"{split} split: group {g[row].item()!r} has rows with different labels {found}; "
                             "expected one label per group (shuffling is by group)")
        keyed[split] = (y[first], inverse)
    null = np.empty(n_permutations)
    for k in range(n_permutations):
        shuffled = {split: rng.permutation(per_group)[inverse] for split, (per_group, inverse) in keyed.items()}
        probe = fit_linear_probe(features["train"], shuffled["train"], features["val"], shuffled["val"], "multiclass",
                                 n_classes, seed=seed, device=device, **probe_kwargs)
        null[k] = probe_metrics(shuffled["test"], probe.predict(features["test"]), "multiclass")["f1_macro"]
    return null


def null_summary(null: np.ndarray, observed: float) -> dict:
    """Mean, SD and central 95% range of a permutation null, and the one-sided p of `observed` being above it,
    (1 + #null >= observed) / (1 + n)."""
    return {"n": int(len(null)), "mean": float(null.mean()), "sd": float(null.std()),
            "range95": [float(v) for v in np.percentile(null, [2.5, 97.5])],
            "p_above": float((1 + np.sum(null >= observed)) / (1 + len(null)))}


def group_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..n_folds-1) of each row; all rows of a group share a fold, groups of each label spread evenly.

    labels, groups : (N,). A group's label is the label of its first row (word → category). Deterministic.
    """
    rng = np.random.default_rng(seed)
    first = {}
    for g, y in zip(groups.tolist(), labels.tolist()):
        first.setdefault(g, y)
    fold_of, k = {}, 0
    for y in sorted(set(first.values())):
        members = sorted(g for g, lab in first.items() if lab == y)
        for g in (members[i] for i in rng.permutation(len(members))):
            fold_of[g] = k % n_folds  # round-robin continues across labels so fold sizes stay even
            k += 1
    return np.array([fold_of[g] for g in groups.tolist()], np.int64)


def cross_validated_probes(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, layers: list[int],
                           n_classes: int, n_folds: int = 6, seed: int = 0, device="cpu", progress: bool = True,
                           done: dict | None = None, on_layer: Callable[[int, dict], None] | None = None,
                           **probe_kwargs) -> dict:
    """Multiclass probes per layer scored on held-out *groups* (e.g. words never seen by the probe).

    For each fold k: test = fold k, validation = fold k+1 (chooses weight decay and epochs), train = the rest,
    so test rows never enter fitting or selection. features (n_layers, N, hidden); labels, groups (N,).
    done, on_layer : as in `run_layer_probes` (layers read back after a kill; a callback after each layer fitted).
    Returns {layer: {"test": mean metrics over folds, "sem": their standard errors (ddof 1), "folds": per-fold
    f1_macro}}.
    """
    if n_folds < 3:
        raise ValueError(f"cross-validation by group needs at least 3 folds (test, validation, train); found {n_folds}")
    n_groups = len(set(groups.tolist()))
    if n_groups < n_folds:
        raise ValueError(f"{n_groups} groups cannot fill {n_folds} folds")
    fold = group_folds(labels, groups, n_folds, seed)
    out = {}
    for li, layer in enumerate(tqdm(layers, desc="probes", leave=False, disable=not progress)):
        if done and layer in done:  # the folds depend on labels, groups and seed only; each fit is seeded alone
            out[layer] = done[layer]
            continue
        scores = []
        for k in range(n_folds):
            test, val = fold == k, fold == (k + 1) % n_folds
            train = ~test & ~val
            probe = fit_linear_probe(features[li][train], labels[train], features[li][val], labels[val], "multiclass",
                                     n_classes, seed=seed, device=device, **probe_kwargs)
            scores.append(probe_metrics(labels[test], probe.predict(features[li][test]), "multiclass"))
        summary = {m: mean_sem([s[m] for s in scores]) for m in scores[0]}
        out[layer] = {"test": {m: v[0] for m, v in summary.items()}, "sem": {m: v[1] for m, v in summary.items()},
                      "folds": [s["f1_macro"] for s in scores]}
        if on_layer is not None:
            on_layer(layer, out[layer])
    return out
