"""Brain-tuning step throughput, achieved GFLOP/s against a matmul peak measured in the same run, peak memory.

    python bench/bench_training.py                         # reduced: 2 x 10 s windows, 2 timed steps, base geometry
    python bench/bench_training.py --real --device cuda    # batch 32, bf16 autocast vs fp32 baseline

Models: wav2vec2-base, HuBERT-base (94 M) and Whisper-small encoder geometry (random init), head to 50,732
voxels (UTS03 at NC > 0.4). Baseline = fp32 (the reference code's precision); toolkit on CUDA = bf16 autocast.
Also measured: the same step fed from the front-end cache (`--cache-front-end`: the frozen CNN / log-mel +
convs, plus `--freeze-layers` blocks when cacheable, precomputed) and that cache's disk size per window.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, matmul_peak_gflops, peak_rss, pin_threads, write_results

N_VOXELS = 50732
WINDOW_S = 10.025  # 5 TRs


def step_flops(model, inputs: dict, target) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.mse_loss(model(**inputs), target).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _one_step(model, opt, inputs: dict, target, device, precision) -> float:
    import torch
    from training import autocast
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with autocast(device, precision):
        loss = torch.nn.functional.mse_loss(model(**inputs).float(), target)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def time_steps_paired(model, opt, wav_inputs: dict, cached_inputs: dict, target, steps, device, precision,
                      set_cached) -> tuple[float, float]:
    """Median seconds per step from waveforms and from the cached front end, the two interleaved step by step.

    Interleaving exposes both to the same drift of a shared machine; one warm-up step of each is dropped.
    """
    plain, cached = [], []
    for _ in range(steps + 1):
        plain.append(_one_step(model, opt, wav_inputs, target, device, precision))
        set_cached(True)
        cached.append(_one_step(model, opt, cached_inputs, target, device, precision))
        set_cached(False)
    return float(np.median(plain[1:])), float(np.median(cached[1:]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true", help="batch 32 (GPU sizes)")
    p.add_argument("--models", nargs="+", default=["wav2vec2", "hubert", "whisper"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each kind")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                   help="default fp32 (+ bf16 on CUDA); bf16 on a CPU with native bf16 is worth measuring")
    p.add_argument("--freeze-layers", type=int, default=0, help="as the trainer's flag (the paper: 0)")
    args = p.parse_args(argv)
    pin_threads(args.threads)
    import tempfile
    from pathlib import Path

    import torch

    import models
    from model_zoo import build_random_model
    device = torch.device(args.device)
    batch = 32 if args.real else 2
    rec = {"machine": machine(args.threads), "batch": batch, "window_s": WINDOW_S, "n_voxels": N_VOXELS,
           "matmul_peak_gflops_fp32": matmul_peak_gflops(args.device), "models": {}}
    precisions = args.precisions or (["fp32"] + (["bf16"] if device.type == "cuda" else []))
    if "bf16" in precisions:
        rec["matmul_peak_gflops_bf16"] = matmul_peak_gflops(args.device, dtype=torch.bfloat16)
    lines = [f"### brain-tuning step, batch {batch} x {WINDOW_S} s, head {N_VOXELS} voxels, {args.threads} threads, "
             f"{args.device}, --freeze-layers {args.freeze_layers}; matmul peak "
             f"{rec['matmul_peak_gflops_fp32']:.0f} GFLOP/s fp32"
             + (f", {rec['matmul_peak_gflops_bf16']:.0f} bf16 (% of peak: against the step's own precision)"
                if "bf16" in precisions else ""), "",
             "| model | precision | s / step | samples / s | GFLOP / step | GFLOP/s | % of peak | peak memory MB "
             "| s / step, cached front end | saving | cache MiB / window |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for mt in args.models:
            mdir = build_random_model(mt, Path(tmp) / mt, size="base")
            backbone, fe, _ = models.load_backbone(str(mdir))
            enc = models.SpeechEncoder(backbone, fe, mt, "truncate" if mt == "whisper" else "pad30")
            enc.freeze_feature_encoder()
            enc.freeze_bottom_layers(args.freeze_layers)
            model = models.BrainTuningModel(enc, models.VoxelHead(enc.hidden_size, N_VOXELS)).to(device).train()
            opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-5)
            wav = torch.randn(batch, int(WINDOW_S * 16000), device=device) * 0.1
            target = torch.randn(batch, N_VOXELS, device=device)
            n_blocks = enc.cacheable_blocks()
            front = enc.front_end(wav, n_blocks)  # what the cache serves (stored bf16 on GPU, fp32 on CPU)
            frames = front.shape[1] if mt == "whisper" else front.shape[2]
            cached = {"front": front, "valid": torch.ones(batch, frames, dtype=torch.bool, device=device)}
            flops = step_flops(model, {"wav": wav}, target)
            entry = {"params_m": sum(q.numel() for q in model.parameters()) / 1e6, "gflop_per_step": flops / 1e9,
                     "cached_blocks": n_blocks, "front_end_cache_mb_per_window_bf16": front[0].numel() * 2 / 2 ** 20}
            for prec in precisions:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                mem = {}
                with peak_rss(mem, "rss_mb"):
                    s, s_cached = time_steps_paired(
                        model, opt, {"wav": wav}, cached, target, args.steps, device, prec,
                        lambda on, enc=enc: setattr(enc, "front_blocks", n_blocks if on else 0))
                entry[prec] = {"seconds_per_step": s, "samples_per_s": batch / s, "gflops": flops / s / 1e9,
                               "peak_fraction": flops / s / 1e9 / rec[f"matmul_peak_gflops_{prec}"],
                               "seconds_per_step_cached_front_end": s_cached, "cache_saving": 1 - s_cached / s,
                               "peak_rss_mb": mem["rss_mb"],
                               "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None}
                peak_mb = entry[prec]["peak_gpu_mb"] or mem["rss_mb"]
                lines.append(f"| {mt} | {prec} | {s:.2f} | {batch / s:.2f} | {flops / 1e9:.0f} | {flops / s / 1e9:.0f} | "
                             f"{100 * entry[prec]['peak_fraction']:.0f} | {peak_mb:.0f} | {s_cached:.2f} | "
                             f"{100 * (1 - s_cached / s):.0f}% | {entry['front_end_cache_mb_per_window_bf16']:.2f} |")
            rec["models"][mt] = entry
            del model, opt, enc, backbone
    lines += ["", "cached front end = the same step fed from `--cache-front-end` (frozen CNN, or Whisper's log-mel + "
                  "convs and the cacheable frozen blocks), computed once per window instead of every epoch. "
                  "Cache size per window in MiB, bf16 (x2 in fp32). "
                  "Peak memory: GPU allocated on CUDA, else the process's resident memory during the timed steps."]
    write_results("training" + ("_real" if args.real else ""), rec, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
