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

from atomic_io import save_npz_atomic, write_json_atomic
from inference import hidden_states_together, pooled_over_batches, prepare_for_inference
from models import ModelError, SpeechEncoder, hub_revision
from run_utils import NPY_READ_ERRORS, nonnegative_float, positive_float

MIN_WINDOW_SAMPLES = 400
POOLINGS = ("last", "last_tr", "mean")


def window_bounds(n_samples: int, stride_s: float = 0.1, context_s: float = 16.0,
                  sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Start and end samples (n_windows,) of the causal windows; ends at every stride, from exact times.

    `stride_s` > 0 and `context_s` >= 0 seconds; raises ValueError otherwise (a zero stride divided by zero, a
    negative stride or context gave no window at all, silently).
    """
    if not stride_s > 0 or not context_s >= 0 or not sample_rate > 0:
        raise ValueError(f"window_bounds needs stride_s > 0, context_s >= 0 and sample_rate > 0 (found "
                         f"{stride_s}, {context_s}, {sample_rate})")
    n_windows = int(np.floor(n_samples / sample_rate / stride_s + 1e-9))
    ends = np.round(np.arange(1, n_windows + 1) * stride_s * sample_rate).astype(np.int64)
    starts = np.maximum(0, ends - int(round((context_s + stride_s) * sample_rate)))
    keep = ends - starts >= MIN_WINDOW_SAMPLES
    return starts[keep], ends[keep]


def window_problem(stride_s: float, context_s: float, sample_rate: int = 16000) -> str | None:
    """The usage error of --stride/--context whose longest window is under MIN_WINDOW_SAMPLES, else None: every
    window would be dropped, and the features, and so every fit, would be empty (scored as r = 0)."""
    longest = int(round((context_s + stride_s) * sample_rate))
    if longest >= MIN_WINDOW_SAMPLES:
        return None
    return (f"--context {context_s:g} + --stride {stride_s:g} gives windows of {longest} samples, under the "
            f"{MIN_WINDOW_SAMPLES} ({MIN_WINDOW_SAMPLES / sample_rate:g} s) a window needs (the convolutional front "
            f"end's first frame): none would be kept; give --context of at least "
            f"{MIN_WINDOW_SAMPLES / sample_rate - stride_s:g} s")


LANCZOS_LOBES = 3  # eval_utils.lanczosinterp2d's window: a TR takes the windows within 3 TRs of it


def stride_problem(stride_s: float, tr_s: float) -> str | None:
    """The usage error of a --stride so long that some TRs have no window within the Lanczos filter's reach (its
    support spans 2·LANCZOS_LOBES TRs): their features would be all zeros. None otherwise."""
    if stride_s <= 2 * LANCZOS_LOBES * tr_s:
        return None
    return (f"--stride {stride_s:g} s leaves TRs with no feature window within the {LANCZOS_LOBES} TRs the Lanczos "
            f"resampling reaches on either side: their features would be zeros; give --stride of at most "
            f"{2 * LANCZOS_LOBES * tr_s:g} s (the paper samples every 0.1 s)")


def stride_note(stride_s: float, tr_s: float) -> str | None:
    """A line for the log when --stride is longer than the TR: the features are then sampled more coarsely than the
    responses they are resampled to, which the Lanczos downsampling does not expect (TRs get uneven weights);
    None otherwise."""
    if stride_s <= tr_s:
        return None
    return (f"note: --stride {stride_s:g} s is longer than the TR ({tr_s:g} s): the features are sampled more coarsely "
            f"than the responses, and the Lanczos resampling weighs TRs unevenly (the paper samples every 0.1 s)")


def check_window_fits(encoder: SpeechEncoder, stride_s: float, context_s: float) -> None:
    """Raise ModelError when the longest window (`context_s + stride_s` seconds) is more than the model takes
    (Whisper: 30 s, in either --whisper-mode); the wav2vec2 family takes any length."""
    if encoder.model_type != "whisper":
        return
    limit_s = encoder.n_mel_frames * encoder.hop / 16000
    longest_s = int(round((context_s + stride_s) * 16000)) / 16000
    if longest_s > limit_s:
        raise ModelError(f"windows of up to {longest_s:g} s (--context {context_s:g} + --stride {stride_s:g}) are longer "
                         f"than the {limit_s:g} s Whisper takes; lower --context to at most {limit_s - stride_s:g}")


def check_finite_features(features: np.ndarray, layers: list[int], model_name: str, what: str) -> None:
    """Raise ModelError naming the model, the layers and `what` (a story, a split) where `features` (per layer, any
    shape) hold NaN or inf: weights that are damaged or diverged (or overflow in bf16) would otherwise be scored,
    r = 0 or chance, as if the model had nothing to say there."""
    bad = [layer for layer, x in zip(layers, features) if not np.isfinite(x).all()]
    if bad:
        raise ModelError(f"{model_name}: the hidden states of layer(s) {bad} hold NaN or inf on {what}: its weights "
                         f"are damaged or diverged (or overflow at this --precision)")


def frames_per_tr(encoder: SpeechEncoder, tr: float) -> int:
    """Encoder frames in one TR of `tr` seconds (at least 1): what "last_tr" pooling averages."""
    return max(1, int(round(tr * encoder.frame_rate())))


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
                           progress: bool = True, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Features of one story.

    Returns
    -------
    times : (n_windows,) window end times in seconds from audio onset.
    feats : (n_layers, n_windows, hidden) float32.
    """
    times, (feats,) = extract_story_features_together([encoder], wav, [layers], stride_s, context_s, pooling, tr,
                                                      batch_size, device, precision, progress, threads)
    return times, feats


def extract_story_features_together(encoders: list[SpeechEncoder], wav: np.ndarray, layers: list[list[int]],
                                    stride_s: float = 0.1, context_s: float = 16.0, pooling: str = "last",
                                    tr: float = 2.0045, batch_size: int = 16, device: str | torch.device = "cpu",
                                    precision: str = "fp32", progress: bool = True, threads: int = 1
                                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Features of one story for several models on the same windows, their common bottom computed once.

    A model whose front end and bottom n blocks equal an earlier model's (`inference.sharing_plan`) starts from
    that model's hidden state n (layers <= n are copied from it): the same numbers as extracting it alone.
    Encoders are put in eval mode, without gradients, on `device`.

    Parameters
    ----------
    encoders : the models, in order (the first of a group of sharing models computes the shared part).
    wav : (n_samples,) 16 kHz waveform.
    layers : per encoder, the hidden-state indices to return.
    threads : batches run side by side in this many threads (`inference.map_inference`; same numbers).

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
    for enc in encoders:
        check_window_fits(enc, stride_s, context_s)
    plan = prepare_for_inference(encoders, device)
    starts, ends = window_bounds(len(wav), stride_s, context_s)
    lengths = ends - starts
    wav_t = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    n_last = [frames_per_tr(enc, tr) for enc in encoders]
    order = np.lexsort((ends, lengths))  # equal lengths side by side: batches need no padding
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [g for b in batches for g in _split_by_length(b, lengths)]

    @torch.inference_mode()
    def pooled(idx: np.ndarray) -> list[list[np.ndarray]]:
        batch = torch.stack([wav_t[starts[i]:ends[i]] for i in idx]).to(device)
        # bf16 autocast on CUDA, and on CPUs with native bf16 matmuls (slow emulation elsewhere: the caller's choice)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            results = hidden_states_together(encoders, batch, layers, plan)
        return [[pool_frames(s.float(), valid, pooling, n_last[k]).cpu().numpy() for s in states]
                for k, (states, valid) in enumerate(results)]

    return ends / 16000.0, pooled_over_batches(encoders, layers, len(ends), pooled, batches, threads, "windows",
                                               progress)


def _split_by_length(batch: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    groups = {}
    for i in batch:
        groups.setdefault(int(lengths[i]), []).append(i)
    return [np.array(g) for g in groups.values()]


def add_window_arguments(parser) -> None:
    """--stride, --context and --pooling, the sliding-window settings of every script that extracts features."""
    parser.add_argument("--stride", type=positive_float, default=0.1, help="seconds between feature windows")
    parser.add_argument("--context", type=nonnegative_float, default=16.0, help="seconds of context per window")
    parser.add_argument("--pooling", default="auto", choices=("auto",) + POOLINGS,
                        help="auto = last frame (wav2vec family), mean over the window's last TR (Whisper)")


def resolve_pooling(requested: str, model_type: str) -> str:
    """The --pooling flag resolved: "auto" = the last frame (wav2vec family), the window's last TR (Whisper)."""
    return requested if requested != "auto" else ("last_tr" if model_type == "whisper" else "last")


def cache_settings(stride_s: float, context_s: float, pooling: str, tr: float, precision: str, model_type: str,
                   whisper_mode: str) -> dict:
    """What, besides the model, a story's features depend on: the FeatureCache key of every script that extracts."""
    return {"stride": stride_s, "context": context_s, "pooling": resolve_pooling(pooling, model_type), "tr": tr,
            "precision": precision, "whisper_mode": whisper_mode if model_type == "whisper" else None}


def model_fingerprint(name_or_path: str, revision: str = "main") -> str:
    """Identity of a model for the cache: hub id @ the commit of the cached snapshot `revision` names
    (`models.hub_revision`: a newer commit fetched later is another model), or path + size + mtime of its weight and
    config files."""
    p = Path(name_or_path)
    if not p.is_dir():
        commit = hub_revision(name_or_path, revision)
        if commit is None:  # no cached snapshot to name: at least never the same key as another revision's
            return name_or_path if revision == "main" else f"{name_or_path}@{revision}"
        return f"{name_or_path}@{commit}"
    parts = [str(p.resolve())]
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) + sorted(p.glob("config.json")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


class FeatureCache:
    """Per (model, story, settings) .npz files: a second evaluation of the same model extracts nothing.

    A story's entry can also record its `source`, the identity of the audio it was extracted from
    (`Ds003020.audio_fingerprint`); read with a source, an entry made from other audio (another dataset with the
    same story names, a replaced file, an entry written before sources were recorded) is a miss and is replaced
    when saved. The probes' split entries carry none: their settings name the dataset and its files.
    """

    def __init__(self, folder: str | os.PathLike, model_name: str, settings: dict, revision: str = "main"):
        key = json.dumps({"model": model_fingerprint(model_name, revision), **settings}, sort_keys=True)
        self.folder = Path(folder) / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.settings = settings
        self.hits = 0

    def path(self, story: str) -> Path:
        return self.folder / f"{story}.npz"

    @staticmethod
    def _same_source(z, source: str | None) -> bool:
        return source is None or ("source" in z.files and str(z["source"]) == source)

    def has(self, story: str, layers: list[int], source: str | None = None) -> bool:
        """Whether every requested layer of `story` (from `source`, when given) is cached (reads the layer list
        only, not the features)."""
        try:
            with np.load(self.path(story), allow_pickle=False) as z:
                return self._same_source(z, source) and set(layers) <= set(z["layers"].tolist())
        except NPY_READ_ERRORS:  # absent, or damaged (a copy cut short): extracted again and overwritten
            return False

    def load(self, story: str, layers: list[int], count_hit: bool = True, source: str | None = None):
        """(times, feats (n_layers, n, H)) if every requested layer is cached (from `source`, when given), else None.

        count_hit : count the read in `hits` (False for features this run has just extracted and saved).
        """
        try:
            with np.load(self.path(story), allow_pickle=False) as z:
                have = z["layers"].tolist()
                if not self._same_source(z, source) or not all(l in have for l in layers):
                    return None
                index = [have.index(l) for l in layers]
                # all the stored layers in their order: no second copy (a frame-level split is gigabytes)
                times, feats = z["times"], z["feats"] if index == list(range(len(have))) else z["feats"][index]
        except NPY_READ_ERRORS:  # absent, or damaged: extracted again and overwritten
            return None
        self.hits += int(count_hit)
        return times, feats

    def save(self, story: str, layers: list[int], times: np.ndarray, feats: np.ndarray,
             source: str | None = None) -> None:
        """Store (n_layers, n, H) `feats` of `layers` (extracted from `source`, when given), keeping the story's other
        cached layers from the same source (an evaluation's seven survive a teacher's one), so that no later run
        extracts them again."""
        if not (self.folder / "settings.json").is_file():  # the same for every story of this folder
            write_json_atomic(self.folder / "settings.json", self.settings)
        layers, feats = list(layers), np.asarray(feats)
        try:
            with np.load(self.path(story), allow_pickle=False) as z:
                if (self._same_source(z, source) and np.array_equal(z["times"], times)
                        and z["feats"].shape[2:] == feats.shape[2:]):
                    keep = [i for i, l in enumerate(z["layers"].tolist()) if l not in layers]
                    stored_layers, stored = [int(z["layers"][i]) for i in keep], z["feats"][keep].astype(feats.dtype)
                    layers, feats = stored_layers + layers, np.concatenate([stored, feats])
        except NPY_READ_ERRORS:  # nothing stored, or a damaged file: replaced by this story's new layers
            pass
        order = np.argsort(layers, kind="stable")
        if (order != np.arange(len(order))).any():  # sorted already: written as is, without a copy
            feats, layers = feats[order], [layers[i] for i in order]
        extra = {} if source is None else {"source": np.array(source)}
        save_npz_atomic(self.path(story), times=times, feats=feats, layers=np.array(layers), **extra)
