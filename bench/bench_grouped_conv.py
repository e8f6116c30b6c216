"""Grouped convolutions under bf16 autocast: cuDNN's bf16 kernels against the toolkit's float32 route.

    python bench/bench_grouped_conv.py                          # reduced, on the CPU (the route forced on)
    python bench/bench_grouped_conv.py --real --device cuda     # wav2vec2-base, 16-s windows, batch 64, a 300-s story

wav2vec2's positional convolution (768 channels, 16 groups, kernel 128: HuBERT's and WavLM's too) runs in
`inference.grouped_convs_in_fp32`'s float32 route under bf16 autocast on a GPU. Three measurements, each with the
route off and on (`inference.FP32_CONV_DEVICES` without and with the device): (1) the convolution alone on a batch
of 16-s windows' frames, its error against float64; (2) a whole forward pass of wav2vec2-base geometry (random
init) on a batch of full windows, ms per window; (3) with --story-s, `features.extract_story_features` over that
much audio at 0.1-s stride and 16-s context, a first pass and a warm second one. Checks: the route's convolution is
no further from float64 than cuDNN's bf16, and the story's features agree within bf16's tolerance (5e-2 of the
largest value).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine, pin_threads, write_results

SIZES = {"reduced": dict(window_s=2.0, batch=8, model="tiny", story_s=0.0),
         "real": dict(window_s=16.0, batch=64, model="base", story_s=300.0)}
LAYERS = {"tiny": [1, 2], "base": [2, 5, 7, 8, 10, 11, 12]}
TOLERANCE = 5e-2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--story-s", type=float, help="seconds of audio for the story pass (default: 300 real, none reduced)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of (1) and (2)")
    args = p.parse_args(argv)
    pin_threads(args.threads)
    import torch

    import inference
    import models
    from features import extract_story_features
    from model_zoo import build_random_model
    from training import autocast

    size = dict(SIZES["real" if args.real else "reduced"])
    if args.story_s is not None:
        size["story_s"] = args.story_s
    kind = torch.device(args.device).type

    def route(on: bool) -> None:
        (inference.FP32_CONV_DEVICES.add if on else inference.FP32_CONV_DEVICES.discard)(kind)

    def ms(fn) -> float:  # mean of args.reps calls after one untimed call
        fn()
        if kind == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            fn()
        if kind == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.reps * 1000

    with tempfile.TemporaryDirectory() as tmp:
        enc = models.SpeechEncoder(*models.load_backbone(build_random_model("wav2vec2", Path(tmp) / "m",
                                                                            size=size["model"])))
        inference.prepare_for_inference([enc], args.device)
    conv = enc.model.encoder.pos_conv_embed.conv
    n = int(size["window_s"] * 16000)
    frames = enc.frame_count(n)
    gen = torch.Generator(device=args.device).manual_seed(0)
    rec = {"size": size, "machine": machine(args.threads), "device": args.device,
           "conv": {"channels": conv.in_channels, "groups": conv.groups, "kernel": conv.kernel_size[0],
                    "frames": frames, "batch": size["batch"]}, "runs": {}}

    x = torch.randn(size["batch"], conv.in_channels, frames, device=args.device, generator=gen)
    with torch.inference_mode():
        exact = torch.nn.functional.conv1d(x[:4].double(), conv.weight.double(), conv.bias.double(),
                                           padding=conv.padding[0], groups=conv.groups)
    wav = torch.randn(size["batch"], n, device=args.device, generator=gen) * 0.1
    layers = LAYERS[size["model"]]

    @torch.inference_mode()
    def under_autocast(fn):  # bf16 autocast as the toolkit's extraction runs it
        with autocast(torch.device(args.device), "bf16"):
            return fn()
    for on in (False, True):
        route(on)
        run = rec["runs"]["fp32_route" if on else "bf16_cudnn"] = {}
        y = under_autocast(lambda: conv(x))
        run["conv_dtype"] = str(y.dtype).replace("torch.", "")
        run["conv_error_vs_float64"] = float((y[:4].double() - exact).abs().max() / exact.abs().max())
        run["conv_ms"] = ms(lambda: under_autocast(lambda: conv(x)))
        run["window_ms"] = ms(lambda: under_autocast(lambda: enc(wav, layers=layers))) / size["batch"]
    story = {}
    if size["story_s"]:
        audio = np.random.default_rng(0).normal(0, 0.1, int(size["story_s"] * 16000)).astype(np.float32)
        for on in (False, True):
            route(on)
            run = rec["runs"]["fp32_route" if on else "bf16_cudnn"]
            for key in ("story_first_s", "story_warm_s"):
                t0 = time.perf_counter()
                story[on] = extract_story_features(enc, audio, layers, 0.1, size["window_s"], "last",
                                                   batch_size=size["batch"], device=args.device, precision="bf16",
                                                   progress=False)[1]
                run[key] = time.perf_counter() - t0
        rec["story_max_relative_difference"] = float(np.abs(story[True] - story[False]).max()
                                                     / np.abs(story[False]).max())
    off, on = rec["runs"]["bf16_cudnn"], rec["runs"]["fp32_route"]
    c = rec["conv"]
    lines = [f"### grouped convolution under bf16 autocast, {c['channels']} channels, {c['groups']} groups, kernel "
             f"{c['kernel']}, {c['frames']} frames ({size['window_s']:g}-s windows), batch {c['batch']}, "
             f"{args.device}", "",
             "| route | conv ms (batch) | conv error vs float64 | forward ms per window | story first pass s "
             "| story warm s |", "|---|---|---|---|---|---|"]
    for name, r in rec["runs"].items():
        lines.append(f"| {name} | {r['conv_ms']:.2f} | {r['conv_error_vs_float64']:.1e} | {r['window_ms']:.3f} | "
                     f"{r.get('story_first_s', float('nan')):.1f} | {r.get('story_warm_s', float('nan')):.1f} |")
    lines += ["", f"conv {off['conv_ms'] / on['conv_ms']:.2f}x, forward {off['window_ms'] / on['window_ms']:.2f}x"
              + (f", story (warm) {off['story_warm_s'] / on['story_warm_s']:.2f}x over {size['story_s']:g} s of "
                 f"audio, features within {rec['story_max_relative_difference']:.1e}" if story else "")]
    write_results("grouped_conv" + ("_real" if args.real else "") + f"_{kind}", rec, "\n".join(lines) + "\n")
    ok = (on["conv_error_vs_float64"] <= off["conv_error_vs_float64"]
          and rec.get("story_max_relative_difference", 0.0) < TOLERANCE)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
