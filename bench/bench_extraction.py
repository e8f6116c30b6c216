"""Layer-wise feature extraction: the toolkit's batched extractor against one-window-at-a-time extraction.

    python bench/bench_extraction.py                       # reduced: base geometry, 12 s audio, 4 s context
    python bench/bench_extraction.py --real                # 16 s context, 60 s of audio, 0.1 s stride
    python bench/bench_extraction.py --real --device cuda --precision bf16
    python bench/bench_extraction.py --precision bf16       # CPU with native bf16 (AVX512-BF16 / AMX)
    python bench/bench_extraction.py --model-type whisper --batch-sizes 1 --inference-threads 2
    python bench/bench_extraction.py --real --device cuda --warm    # + a warm second pass over the same audio
    python bench/bench_extraction.py --real --device cuda --warm --profile 20   # + a profiled pass over 20 s
    python bench/bench_extraction.py --real --device cuda --warm --audio-s 300 --batch-sizes 16 64   # story-like

Each method runs in its own process (same pinned thread count) so that peak memory (max RSS) is its own.
Baseline = the public reference's approach: every window alone through the model, autograd left on, all
hidden states returned, fp32; its outputs kept with their graphs make memory grow per window (measured on the
first windows, then released so the run fits). Toolkit = `features.extract_story_features` (inference mode,
equal-length windows batched: `--batch-sizes`, only the requested layers kept, `--precision`), and at batch 1
with `--inference-threads` (batches side by side in threads, each op on one core; default: --threads when
above 1). Check: the same features (fp32: within 1e-3 of the largest value; bf16: within 5e-2, its effect on
cc_norm in RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine, max_rss_mb, pin_threads, write_results

SIZES = {"reduced": dict(audio_s=12.0, context_s=4.0, stride_s=0.1), "real": dict(audio_s=60.0, context_s=16.0, stride_s=0.1)}
LAYERS = [2, 5, 7, 8, 10, 11, 12]


# max |toolkit - reference| / max |reference| accepted: float32 round-off, or bf16's 8-bit mantissa through 12 layers
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}
GRAPH_WINDOWS = 3  # reference windows kept with their autograd graphs to measure the memory growth


def worker(method: str, model_dir: str, size: dict, threads: int, device: str, precision: str, out: Path,
           batch_size: int, inference_threads: int = 1, warm: bool = False, profile_s: float = 0.0) -> None:
    pin_threads(threads)
    import torch

    import models
    from features import extract_story_features, window_bounds
    backbone, fe, mt = models.load_backbone(model_dir)
    enc = models.SpeechEncoder(backbone, fe, mt).eval().to(device)
    wav = np.random.default_rng(0).normal(0, 0.1, int(size["audio_s"] * 16000)).astype(np.float32)
    extra = {}

    def toolkit():
        return extract_story_features(enc, wav, LAYERS, size["stride_s"], size["context_s"], "last",
                                      batch_size=batch_size, device=device, precision=precision, progress=False,
                                      threads=inference_threads)[1]

    def reference():
        starts, ends = window_bounds(len(wav), size["stride_s"], size["context_s"])
        order = np.argsort(-(ends - starts), kind="stable")  # longest windows first: the growth measured is the real one
        rows, graphs = {}, []
        rss0 = max_rss_mb()
        for i in order:
            states, valid = enc(torch.from_numpy(wav[starts[i]:ends[i]])[None].to(device))  # autograd on, all layers
            rows[i] = [states[l][0, -1].detach().cpu().numpy() for l in LAYERS]
            if len(graphs) < GRAPH_WINDOWS:
                graphs.append(states)
                if len(graphs) == GRAPH_WINDOWS:
                    extra.setdefault("rss_growth_mb_per_window_kept", (max_rss_mb() - rss0) / GRAPH_WINDOWS)
                    graphs = [None] * GRAPH_WINDOWS  # release: the full reference would run out of memory
        return np.stack([np.stack([rows[i][li] for i in range(len(starts))]) for li in range(len(LAYERS))])
    run = toolkit if method == "toolkit" else reference
    t0 = time.perf_counter()
    feats = run()
    on_gpu = torch.device(device).type == "cuda"
    if warm:  # the same audio again: what the first pass spent on one-off set-up (per-shape kernel choice...)
        extra["seconds_first_pass"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    name = f"{method}{batch_size}_{inference_threads}"
    np.save(out / f"{name}.npy", feats)

    def write():
        (out / f"{name}.json").write_text(json.dumps({"seconds": seconds, "max_rss_mb": max_rss_mb(),
                                                      "n_windows": int(feats.shape[1]), **extra}))
    write()  # before the profile: a run cut off during it keeps its times
    if profile_s:  # a last pass under the profiler over the first profile_s of audio (its overhead kept out of the times)
        from torch.profiler import ProfilerActivity, profile
        wav = wav[:int(profile_s * 16000)]  # a whole story's events (~1,700-2,700 ops per window) take minutes to tally
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
            run()
            if on_gpu:
                torch.cuda.synchronize()
        extra["profile_audio_s"] = profile_s
        extra["profile_top_ops"] = prof.key_averages().table(
            sort_by="self_cuda_time_total" if on_gpu else "self_cpu_time_total", row_limit=15)
        write()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true")
    p.add_argument("--model-type", default="wav2vec2", choices=["wav2vec2", "hubert", "whisper"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="toolkit batch sizes to measure")
    p.add_argument("--inference-threads", type=int, nargs="+",
                   help="toolkit at batch 1 with these inference threads (default: --threads, when above 1)")
    p.add_argument("--audio-s", type=float, help="seconds of audio (default: 12 reduced, 60 real); a real story's "
                   "share of windows shorter than the context (~3% of ~600 s) needs ~300 or more")
    p.add_argument("--warm", action="store_true",
                   help="time a second pass of each method over the same audio (the first pass's time kept as "
                        "seconds_first_pass)")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="then profile a last pass over the first SECONDS of the audio (top ops in the JSON)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--worker-inference-threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = dict(SIZES["real" if args.real else "reduced"])
    if args.audio_s:
        size["audio_s"] = args.audio_s
    if args.worker:
        worker(args.worker, args.model_dir, size, args.threads, args.device, args.precision, Path(args.tmp),
               args.batch_size, args.worker_inference_threads, args.warm, args.profile)
        return 0
    from model_zoo import build_random_model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_random_model(args.model_type, tmp / "model", size="base")
        rec = {"size": size, "model": f"{args.model_type} base geometry (random init)", "layers": LAYERS,
               "machine": machine(args.threads), "device": args.device, "precision": args.precision, "runs": {}}
        inference_threads = args.inference_threads or ([args.threads] if args.threads > 1 else [])
        runs = ([("reference", 1, 1)] + [("toolkit", b, 1) for b in args.batch_sizes]
                + [("toolkit", 1, n) for n in inference_threads])
        for method, bs, n in runs:
            cmd = [sys.executable, __file__, "--worker", method, "--model-dir", str(model_dir), "--tmp", str(tmp),
                   "--threads", str(args.threads), "--device", args.device, "--precision", args.precision,
                   "--batch-size", str(bs), "--worker-inference-threads", str(n)] + (["--real"] if args.real else [])
            cmd += (["--warm"] if args.warm else []) + ["--profile", str(args.profile), "--audio-s", str(size["audio_s"])]
            subprocess.run(cmd, check=True)
            key = "reference" if method == "reference" else f"toolkit_batch{bs}" + (f"_threads{n}" if n > 1 else "")
            rec["runs"][key] = json.loads((tmp / f"{method}{bs}_{n}.json").read_text())
            rec["runs"][key]["audio_s_per_s"] = size["audio_s"] / rec["runs"][key]["seconds"]
            if method == "toolkit":
                a, b = np.load(tmp / "reference1_1.npy"), np.load(tmp / f"toolkit{bs}_{n}.npy")
                rec["runs"][key]["max_relative_difference"] = float(np.abs(a - b).max() / np.abs(a).max())
    best = min((k for k in rec["runs"] if k.startswith("toolkit")), key=lambda k: rec["runs"][k]["seconds"])
    rec["best_toolkit"] = best
    rec["speedup"] = rec["runs"]["reference"]["seconds"] / rec["runs"][best]["seconds"]
    rec["max_relative_difference"] = max(v.get("max_relative_difference", 0) for v in rec["runs"].values())
    lines = [f"### extraction, {rec['model']}, {size['audio_s']:.0f} s audio, context {size['context_s']} s, stride "
             f"{size['stride_s']} s, {args.threads} threads, {args.device} {args.precision}", "",
             "| method | seconds | audio s / s | max RSS MB |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['seconds']:.1f} | {v['audio_s_per_s']:.2f} | {v['max_rss_mb']:.0f} |" for k, v in rec["runs"].items()]
    if args.warm:
        lines += ["", "times are of a second pass over the same audio (first pass: "
                  + ", ".join(f"{k} {v['seconds_first_pass']:.1f} s" for k, v in rec["runs"].items()
                              if "seconds_first_pass" in v) + ")"]
    if args.profile:
        lines += ["", f"profile of a pass over the first {args.profile:g} s of audio (top ops): in the JSON"]
    growth = rec["runs"]["reference"].get("rss_growth_mb_per_window_kept", float("nan"))
    lines += ["", f"speed-up ({best} vs reference): {rec['speedup']:.2f}x; max relative feature difference "
                  f"{rec['max_relative_difference']:.1e}; reference memory growth with outputs kept: {growth:.0f} MB "
                  f"per window"]
    write_results(f"extraction_{args.model_type}" + ("_real" if args.real else "")
                  + (f"_{size['audio_s']:g}s" if args.audio_s else "")
                  + ("_bf16" if args.precision == "bf16" else ""), rec, "\n".join(lines) + "\n")
    return 0 if rec["max_relative_difference"] < TOLERANCE[args.precision] else 1


if __name__ == "__main__":
    raise SystemExit(main())
