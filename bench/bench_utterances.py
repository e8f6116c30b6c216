"""Utterance features for the probes with Whisper pad30: batches of mixed lengths against one utterance per pass.

    python bench/bench_utterances.py                       # 32 utterances of 1-4 s, Whisper tiny.en (converted)
    python bench/bench_utterances.py --device cuda --n 256 --model-name openai/whisper-small

Whisper pads every input to 30 s, so before 2026-12-03 the probes ran each utterance of its own length alone
(real corpora: almost every length unique, batch 1 in effect). Now on a GPU `--batch-size` utterances of any
lengths share a pass (probes.mixed_length_batches); on a CPU it was slower (this script), so there they do not.
Check: the same pooled features (within 1e-4 of the largest value).
"""
from __future__ import annotations

import argparse

import numpy as np

from common import REPO, machine, max_rss_mb, measure, pin_threads, write_results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-name", default=str(REPO / "models" / "whisper-tiny.en"),
                   help="a Whisper model (default: the bundled tiny.en after `make demo` converted it)")
    p.add_argument("--n", type=int, default=32, help="utterances")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    pin_threads(args.threads)
    import models
    from probes import utterance_features
    backbone, fe, mt = models.load_backbone(args.model_name)
    enc = models.SpeechEncoder(backbone, fe, mt, "pad30")
    rng = np.random.default_rng(0)
    wavs = [rng.normal(0, 0.1, int(rng.uniform(1, 4) * 16000)).astype(np.float32) for _ in range(args.n)]
    layers = list(range(enc.num_layers + 1))
    utterance_features(enc, wavs[:2], layers, batch_size=2, device=args.device, progress=False)  # warm-up
    rec = {"n_utterances": args.n, "model": args.model_name, "machine": machine(args.threads), "device": args.device,
           "runs": {}}
    out = {}
    for name, bs in (("one_by_one", 1), ("mixed_lengths", args.batch_size)):
        with measure(rec["runs"], name, trace_memory=False):
            out[name] = utterance_features(enc, wavs, layers, batch_size=bs, device=args.device, progress=False,
                                           mixed_lengths=True)
    err = float(np.abs(out["mixed_lengths"] - out["one_by_one"]).max() / np.abs(out["one_by_one"]).max())
    rec.update(max_relative_difference=err, max_rss_mb=max_rss_mb())
    one, mixed = rec["runs"]["one_by_one"]["seconds"], rec["runs"]["mixed_lengths"]["seconds"]
    table = (f"### Whisper pad30 utterance features, {args.n} utterances of 1-4 s, {args.device}, {args.threads} "
             f"threads\n\n| one per pass | {args.batch_size} of mixed lengths per pass | speed-up | max rel. difference |"
             f"\n|---|---|---|---|\n| {one:.1f} s | {mixed:.1f} s | {one / mixed:.2f}x | {err:.1e} |\n")
    write_results("utterances", rec, table)
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
