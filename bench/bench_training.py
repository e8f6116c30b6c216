"""Brain-tuning step throughput, achieved GFLOP/s against a matmul peak measured in the same run, peak memory.

    python bench/bench_training.py                         # reduced: 2 x 10 s windows, 2 timed steps, base geometry
    python bench/bench_training.py --real --device cuda    # batch 32, bf16 autocast vs fp32 baseline

Models: wav2vec2-base, HuBERT-base (94 M) and Whisper-small encoder geometry (random init), head to 50,732
voxels (UTS03 at NC > 0.4). Baseline = fp32 (the reference code's precision); toolkit on CUDA = bf16 autocast.
Also measured: the share of a step spent in the frozen front end (CNN / log-mel + convs), i.e. the most a
per-window cache of its output could save, and that cache's memory per window.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, matmul_peak_gflops, pin_threads, write_results

N_VOXELS = 50732
WINDOW_S = 10.025  # 5 TRs


def step_flops(model, wav, target) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.mse_loss(model(wav), target).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_steps(model, opt, wav, target, steps, device, precision) -> float:
    import torch
    from training import autocast
    times = []
    for _ in range(steps + 1):  # first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device, precision):
            loss = torch.nn.functional.mse_loss(model(wav).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def front_end_seconds(encoder, wav) -> float:
    import torch
    with torch.no_grad():
        t0 = time.perf_counter()
        if encoder.model_type == "whisper":
            enc = encoder.encoder
            x = torch.nn.functional.gelu(enc.conv1(encoder.log_mel(wav)))
            torch.nn.functional.gelu(enc.conv2(x))
        else:
            encoder.model.feature_extractor(wav)
        if wav.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true", help="batch 32 (GPU sizes)")
    p.add_argument("--models", nargs="+", default=["wav2vec2", "hubert", "whisper"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=2)
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
    precisions = ["fp32"] + (["bf16"] if device.type == "cuda" else [])
    lines = [f"### brain-tuning step, batch {batch} x {WINDOW_S} s, head {N_VOXELS} voxels, {args.threads} threads, "
             f"{args.device}; matmul peak {rec['matmul_peak_gflops_fp32']:.0f} GFLOP/s fp32", "",
             "| model | precision | s / step | samples / s | GFLOP / step | GFLOP/s | % of peak | front end % of step |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for mt in args.models:
            mdir = build_random_model(mt, Path(tmp) / mt, size="base")
            backbone, fe, _ = models.load_backbone(str(mdir))
            enc = models.SpeechEncoder(backbone, fe, mt, "truncate" if mt == "whisper" else "pad30")
            enc.freeze_feature_encoder()
            model = models.BrainTuningModel(enc, models.VoxelHead(enc.hidden_size, N_VOXELS)).to(device).train()
            opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-5)
            wav = torch.randn(batch, int(WINDOW_S * 16000), device=device) * 0.1
            target = torch.randn(batch, N_VOXELS, device=device)
            flops = step_flops(model, wav, target)
            fe_s = front_end_seconds(enc, wav)
            entry = {"params_m": sum(q.numel() for q in model.parameters()) / 1e6, "gflop_per_step": flops / 1e9}
            for prec in precisions:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                s = time_steps(model, opt, wav, target, args.steps, device, prec)
                entry[prec] = {"seconds_per_step": s, "samples_per_s": batch / s, "gflops": flops / s / 1e9,
                               "peak_fraction": flops / s / 1e9 / rec["matmul_peak_gflops_fp32"],
                               "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None}
                lines.append(f"| {mt} | {prec} | {s:.2f} | {batch / s:.2f} | {flops / 1e9:.0f} | {flops / s / 1e9:.0f} | "
                             f"{100 * entry[prec]['peak_fraction']:.0f} | {100 * fe_s / s:.0f} |")
            frames = enc.frame_count(int(WINDOW_S * 16000))
            width = 512 if mt != "whisper" else enc.hidden_size
            entry["front_end_fraction"] = fe_s / entry["fp32"]["seconds_per_step"]
            entry["front_end_cache_mb_per_window_bf16"] = frames * width * 2 / 2 ** 20
            rec["models"][mt] = entry
            del model, opt, enc, backbone
    lines += ["", "front end % = forward time of the frozen CNN (wav2vec2/HuBERT) or log-mel + convs (Whisper) as a "
                  "share of one training step: the most a per-window cache of its output could save. Cache size "
                  "per window (bf16): " + ", ".join(f"{m} {e['front_end_cache_mb_per_window_bf16']:.2f} MB"
                                                    for m, e in rec["models"].items())]
    write_results("training" + ("_real" if args.real else ""), rec, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
