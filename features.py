"""Layer-wise features of a speech model on causal sliding windows of each story, cached on disk.

For a story waveform, windows end every `stride` seconds (t = stride, 2·stride, …) and reach back `context`
seconds plus one stride (shorter at story start; windows under 400 samples are dropped). Each window gives one
vector per requested layer: the last frame (wav2vec2 family) or the mean over the frames of the window's
last TR ("last_tr", the default for Whisper: with positions cut to the window its last frame carries almost
nothing). Window end times are the feature times. Equal-length windows run in batches under inference mode.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import SpeechEncoder

MIN_WINDOW_SAMPLES = 400
POOLINGS = ("last", "last_tr", "mean")


def window_bounds(n_samples: int, stride_s: float = 0.1, context_s: float = 16.0,
                  sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Start and end samples (n_windows,) of the causal windows; ends at every stride, from exact times."""
    n_windows = int(np.floor(n_samples / sample_rate / stride_s + 1e-9))
    ends = np.round(np.arange(1, n_windows + 1) * stride_s * sample_rate).astype(np.int64)
    starts = np.maximum(0, ends - int(round((context_s + stride_s) * sample_rate)))
    keep = ends - starts >= MIN_WINDOW_SAMPLES
    return starts[keep], ends[keep]


def pool_frames(states: torch.Tensor, valid: torch.Tensor, pooling: str, n_last_frames: int) -> torch.Tensor:
    """(B, frames, H) -> (B, H): last valid frame, mean of the last `n_last_frames` valid frames, or mean."""
    n_valid = valid.sum(1)
    if pooling == "last":
        return states[torch.arange(len(states)), n_valid - 1]
    if pooling == "mean":
        w = valid.unsqueeze(-1).to(states.dtype)
        return (states * w).sum(1) / w.sum(1)
    idx = torch.arange(states.shape[1], device=states.device)[None, :]
    lo = (n_valid - n_last_frames).clamp(min=0)[:, None]
    w = ((idx >= lo) & (idx < n_valid[:, None])).unsqueeze(-1).to(states.dtype)
    return (states * w).sum(1) / w.sum(1)


def extract_story_features(encoder: SpeechEncoder, wav: np.ndarray, layers: list[int], stride_s: float = 0.1,
                           context_s: float = 16.0, pooling: str = "last", tr: float = 2.0045, batch_size: int = 16,
                           device: str | torch.device = "cpu", precision: str = "fp32",
                           progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Features of one story.

    Returns
    -------
    times : (n_windows,) window end times in seconds from audio onset.
    feats : (n_layers, n_windows, hidden) float32.
    """
    times, (feats,) = extract_story_features_together([encoder], wav, [layers], stride_s, context_s, pooling, tr,
                                                      batch_size, device, precision, progress)
    return times, feats


def sharing_plan(encoders: list[SpeechEncoder]) -> list[tuple[int, int] | None]:
    """Per encoder: None (computes from the waveform) or (i, n): the front end and n bottom blocks are those
    of the earlier encoder i, itself computing from the waveform (see models.shared_bottom)."""
    from models import shared_bottom
    plan = []
    for k, enc in enumerate(encoders):
        roots = [i for i in range(k) if plan[i] is None]
        shared = [(i, n) for i in roots if (n := shared_bottom(encoders[i], enc)) is not None]
        plan.append(max(shared, key=lambda t: t[1]) if shared else None)
    return plan


def prepare_for_inference(encoders: list[SpeechEncoder], device) -> list[tuple[int, int] | None]:
    """Put the encoders in eval mode, without gradients, on `device`; returns their `sharing_plan`."""
    for enc in encoders:
        enc.eval().requires_grad_(False).to(device)
    return sharing_plan(encoders)


@torch.inference_mode()
def extract_story_features_together(encoders: list[SpeechEncoder], wav: np.ndarray, layers: list[list[int]],
                                    stride_s: float = 0.1, context_s: float = 16.0, pooling: str = "last",
                                    tr: float = 2.0045, batch_size: int = 16, device: str | torch.device = "cpu",
                                    precision: str = "fp32", progress: bool = True
                                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Features of one story for several models on the same windows, their common bottom computed once.

    A model whose front end and bottom n blocks equal an earlier model's (`sharing_plan`) starts from that
    model's hidden state n (layers <= n are copied from it): the same numbers as extracting it alone.
    Encoders are put in eval mode, without gradients, on `device`.

    Parameters
    ----------
    encoders : the models, in order (the first of a group of sharing models computes the shared part).
    wav : (n_samples,) 16 kHz waveform.
    layers : per encoder, the hidden-state indices to return.

    Returns
    -------
    times : (n_windows,) window end times in seconds from audio onset.
    feats : per encoder, (n_layers, n_windows, hidden) float32.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, found {precision!r}")
    if len(layers) != len(encoders):
        raise ValueError(f"expected one layer list per encoder ({len(encoders)}), found {len(layers)}")
    plan = prepare_for_inference(encoders, device)
    starts, ends = window_bounds(len(wav), stride_s, context_s)
    lengths = ends - starts
    out = [np.zeros((len(ls), len(ends), enc.hidden_size), dtype=np.float32) for enc, ls in zip(encoders, layers)]
    wav_t = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    n_last = [max(1, int(round(tr * enc.frame_count(16000 * 10) / 10.0))) for enc in encoders]
    order = np.lexsort((ends, lengths))  # equal lengths side by side: batches need no padding
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [g for b in batches for g in _split_by_length(b, lengths)]
    # bf16 autocast on CUDA, and on CPUs with native bf16 matmuls (slow emulation elsewhere: the caller's choice)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for idx in tqdm(batches, desc="windows", leave=False, disable=not progress):
        batch = torch.stack([wav_t[starts[i]:ends[i]] for i in idx]).to(device)
        with autocast:
            results = hidden_states_together(encoders, batch, layers, plan)
        for k, (states, valid) in enumerate(results):
            for li, s in enumerate(states):
                out[k][li, idx] = pool_frames(s.float(), valid, pooling, n_last[k]).cpu().numpy()
    return ends / 16000.0, out


@torch.inference_mode()
def hidden_states_together(encoders: list[SpeechEncoder], batch: torch.Tensor, layers: list[list[int]],
                           plan: list | None = None) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """Hidden states of several models on one batch, the bottom they share computed once (same numbers).

    Parameters
    ----------
    encoders : the models (in eval mode, without gradients, on batch's device).
    batch : (B, n_samples) 16 kHz waveforms of equal length.
    layers : per encoder, the hidden-state indices to return.
    plan : `sharing_plan(encoders)` (computed when not given; pass it when calling per batch).

    Returns
    -------
    per encoder: (states, valid), states[i] (B, frames, H) for layers[k][i], valid (B, frames) bool.
    """
    plan = sharing_plan(encoders) if plan is None else plan
    has_sharers = [any(p is not None and p[0] == k for p in plan) for k in range(len(encoders))]
    # what each computing model must return: its own layers, and the layers and start states of its sharers
    needed = [set(ls) for ls in layers]
    for k, p in enumerate(plan):
        if p is not None:
            needed[p[0]] |= {l for l in layers[k] if l <= p[1]} | {p[1]}
    computed = {}  # encoder index -> (hidden states by layer, valid mask, front end)
    for k, enc in enumerate(encoders):
        p = plan[k]
        if p is None:
            computed[k] = _states_from_wave(enc, batch, sorted(needed[k]), with_front=has_sharers[k])
            continue
        root_states, valid, front = computed[p[0]]
        own = [l for l in layers[k] if l > p[1]]
        states = {l: root_states[l] for l in layers[k] if l <= p[1]}
        if own:
            start = front if enc.model_type != "whisper" or p[1] == 0 else root_states[p[1]]
            states.update(zip(own, _forward_from(enc, start, p[1], valid, own)))
        computed[k] = (states, valid, None)
    return [([computed[k][0][l] for l in ls], computed[k][1]) for k, ls in enumerate(layers)]


def _states_from_wave(enc: SpeechEncoder, batch: torch.Tensor, layers: list[int], with_front: bool):
    """({layer: (B, frames, H)}, valid, front end or None) of one model computing from the waveform."""
    if not with_front:
        states, valid = enc(batch, layers=layers)
        return dict(zip(layers, states)), valid, None
    front = enc.front_end(batch, 0)
    frames = front.shape[1] if enc.model_type == "whisper" else front.shape[2]  # wav2vec2: (B, channels, frames)
    valid = enc.valid_frames(batch.shape[1], (batch.shape[0], frames), batch.device)
    states = _forward_from(enc, front, 0, valid, layers)
    return dict(zip(layers, states)), valid, front


def _forward_from(enc: SpeechEncoder, start: torch.Tensor, n_blocks: int, valid: torch.Tensor,
                  layers: list[int]) -> list[torch.Tensor]:
    """Hidden states `layers` of `enc` from the output of its front end and n_blocks bottom blocks."""
    saved = enc.front_blocks
    enc.front_blocks = n_blocks
    try:
        states, _ = enc(front=start, valid=valid, layers=layers)
    finally:
        enc.front_blocks = saved
    return states


def _split_by_length(batch: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    groups = {}
    for i in batch:
        groups.setdefault(int(lengths[i]), []).append(i)
    return [np.array(g) for g in groups.values()]


def model_fingerprint(name_or_path: str) -> str:
    """Identity of a model for the cache: hub id, or path + size + mtime of its weight and config files."""
    p = Path(name_or_path)
    if not p.is_dir():
        return name_or_path
    parts = [str(p.resolve())]
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) + sorted(p.glob("config.json")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


class FeatureCache:
    """Per (model, story, settings) .npz files: a second evaluation of the same model extracts nothing."""

    def __init__(self, folder: str | os.PathLike, model_name: str, settings: dict):
        key = json.dumps({"model": model_fingerprint(model_name), **settings}, sort_keys=True)
        self.folder = Path(folder) / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.settings = settings
        self.hits = 0

    def path(self, story: str) -> Path:
        return self.folder / f"{story}.npz"

    def load(self, story: str, layers: list[int]):
        """(times, feats (n_layers, n, H)) if every requested layer is cached, else None."""
        path = self.path(story)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            have = list(z["layers"])
            if not all(l in have for l in layers):
                return None
            self.hits += 1
            return z["times"], z["feats"][[have.index(l) for l in layers]]

    def save(self, story: str, layers: list[int], times: np.ndarray, feats: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.json").write_text(json.dumps(self.settings, indent=1))
        tmp = self.folder / f".{story}.{os.getpid()}.tmp.npz"
        np.savez(tmp, times=times, feats=feats, layers=np.array(layers))
        os.replace(tmp, self.path(story))
