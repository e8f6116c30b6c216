"""Running frozen speech encoders for features: eval set-up, bottoms shared between models, inference threads.

Several models that share their front end and bottom blocks (a brain-tuned model with frozen layers and its
pretrained start) are run together: the shared part once per batch, the same numbers as each run alone. On a
CPU, `map_inference` runs independent batches side by side in threads, each op on one core. On a GPU, grouped
convolutions (wav2vec2's positional convolution) leave bf16 autocast, where cuDNN is slow (`grouped_convs_in_fp32`).
"""
from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models import SpeechEncoder, shared_bottom


def sharing_plan(encoders: list[SpeechEncoder]) -> list[tuple[int, int] | None]:
    """Per encoder: None (computes from the waveform) or (i, n): the front end and n bottom blocks are those
    of the earlier encoder i, itself computing from the waveform (see models.shared_bottom)."""
    plan = []
    for k, enc in enumerate(encoders):
        roots = [i for i in range(k) if plan[i] is None]
        shared = [(i, n) for i in roots if (n := shared_bottom(encoders[i], enc)) is not None]
        # a shared front end is an equivalence (same type, config, weights) and no two roots share one: at most one
        plan.append(shared[0] if shared else None)
    return plan


def prepare_for_inference(encoders: list[SpeechEncoder], device) -> list[tuple[int, int] | None]:
    """Put the encoders in eval mode, without gradients, on `device`; returns their `sharing_plan`.

    Their grouped convolutions run in float32 under bf16 autocast on a GPU (`grouped_convs_in_fp32`).
    """
    for enc in encoders:
        enc.eval().requires_grad_(False).to(device)
        grouped_convs_in_fp32(enc)
    return sharing_plan(encoders)


FP32_CONV_DEVICES = {"cuda"}  # device types where grouped convolutions leave bf16 autocast (tests add "cpu")


def _conv1d_forward(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    kind = x.device.type
    if (kind in FP32_CONV_DEVICES and torch.is_inference_mode_enabled() and torch.is_autocast_enabled(kind)
            and conv.weight.dtype == torch.float32):
        with torch.autocast(kind, enabled=False):
            return nn.Conv1d.forward(conv, x.float()).to(torch.get_autocast_dtype(kind))
    return nn.Conv1d.forward(conv, x)


def grouped_convs_in_fp32(module: nn.Module) -> int:
    """Run the module's grouped Conv1d layers in float32 when called under autocast in inference mode on a device
    in FP32_CONV_DEVICES (output cast back to the autocast dtype); elsewhere, training included, unchanged.

    On an H200, cuDNN runs wav2vec2's positional convolution (768 channels, 16 groups, kernel 128) in bf16 with
    slow per-group kernels: 38.9 ms for a batch of 64 16-s windows, a third of their forward pass, for ~3% of
    its FLOPs; in float32 (TF32, torch's default for cuDNN convolutions) 5.4 ms (bench/RESULTS.md). Rounded
    once to bf16 at the end, the output is no further from the exact one than the bf16 kernels'. Idempotent;
    parameters and state dict unchanged. Returns the number of layers routed.
    """
    routed = 0
    for m in module.modules():
        if isinstance(m, nn.Conv1d) and m.groups > 1:
            m.forward = types.MethodType(_conv1d_forward, m)
            routed += 1
    return routed


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
    states, _ = enc(front=start, valid=valid, layers=layers, front_blocks=n_blocks)
    return states


def inference_threads(choice: int | None, device) -> int:
    """The --inference-threads flag resolved: None means torch's intra-op threads on a CPU, 1 on a GPU."""
    if choice is not None:
        if choice < 1:
            raise ValueError(f"--inference-threads must be >= 1, found {choice}")
        return choice
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def pooled_over_batches(encoders: list[SpeechEncoder], layers: list[list[int]], n_items: int, fn, batches: list,
                        threads: int = 1, desc: str = "", progress: bool = True) -> list[np.ndarray]:
    """Run `fn` on every batch of item indices (`map_inference`) and place its outputs at those indices.

    fn(idx) returns, per encoder and per layer of `layers`, the pooled features (len(idx), hidden) of items idx.
    Returns per encoder (n_layers, n_items, hidden) float32; items in no batch stay zero.
    """
    out = [np.zeros((len(ls), n_items, enc.hidden_size), np.float32) for enc, ls in zip(encoders, layers)]
    for idx, per_model in zip(batches, map_inference(fn, batches, threads, desc, progress)):
        for k, per_layer in enumerate(per_model):
            for li, x in enumerate(per_layer):
                out[k][li, idx] = x
    return out


def map_inference(fn, items: list, threads: int = 1, desc: str = "", progress: bool = True):
    """Yield fn(item) for every item, in order, with a progress bar.

    threads > 1: that many Python threads call `fn` side by side, each op running on one core. On a CPU the
    small ops of one window or one utterance use several cores poorly: on 2 cores, two threads run Whisper
    tiny.en on 8-s windows 1.4x as fast as one thread with 2-core ops. Outputs equal those of ops on one core
    bit for bit (Whisper's equal those of 2-core ops too; wav2vec2's convs round differently on 2 cores, ~1e-7).
    `fn` must enter its own inference mode and autocast (both are per thread) and must not change shared state.
    """
    bar = dict(total=len(items), desc=desc, leave=False, disable=not progress)
    if threads <= 1:
        yield from tqdm(map(fn, items), **bar)
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            yield from tqdm(pool.map(fn, items), **bar)
    finally:
        torch.set_num_threads(saved)
