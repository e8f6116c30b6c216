"""Fitting one layer's linear probe (the toolkit's full selection: 5 weight decays x 60 epochs) on a device.

    python bench/bench_probes.py                          # reduced: 20,000 frames (CPU, ~1 min)
    python bench/bench_probes.py --real                   # TIMIT phonemes_frame at --frame-step 4, base model width
    python bench/bench_probes.py --real --device cuda

The probe scripts fit on their --device since 2026-12-03 (before: always on the CPU). At real size the fit is the
probe step's cost: n_layers x models x this figure. Features are synthetic (class means + noise), so the score
only checks that the probe learns; the time does not depend on the values.
"""
from __future__ import annotations

import argparse

import numpy as np

from common import machine, max_rss_mb, measure, pin_threads, write_results

# real: TIMIT TRAIN (~3.1 h) at 50 frames/s, every 4th frame, 10% of speakers held out for validation; 768 = base width
SIZES = {"reduced": dict(n_train=20000, n_val=2000, hidden=768, n_classes=39),
         "real": dict(n_train=127000, n_val=14000, hidden=768, n_classes=39)}


def synthetic(n_train, n_val, hidden, n_classes, seed=0):
    """Rows drawn around one random mean per class: a probe that learns scores well above chance."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, hidden), dtype=np.float32) * 0.2
    y = rng.integers(0, n_classes, n_train + n_val)
    x = means[y] + rng.standard_normal((len(y), hidden), dtype=np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true", help="TIMIT frame-level size (~5 min per layer on 2 CPU cores)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=13, help="layers per model, for the projected total")
    args = p.parse_args(argv)
    pin_threads(args.threads)
    from probes import fit_linear_probe, probe_metrics
    size = SIZES["real" if args.real else "reduced"]
    x_tr, y_tr, x_val, y_val = synthetic(**size)
    rec = {"size": size, "machine": machine(args.threads), "device": args.device, "runs": {}}
    if args.device != "cpu":  # CUDA context and kernels up before the clock starts
        fit_linear_probe(x_tr[:2048], y_tr[:2048], x_val, y_val, "multiclass", size["n_classes"], max_epochs=1,
                         weight_decays=(0.0,), device=args.device)
    with measure(rec["runs"], "one_layer", trace_memory=False):
        probe = fit_linear_probe(x_tr, y_tr, x_val, y_val, "multiclass", size["n_classes"], device=args.device)
    seconds = rec["runs"]["one_layer"]["seconds"]
    rec["val_f1_macro"] = probe_metrics(y_val, probe.predict(x_val), "multiclass")["f1_macro"]
    rec["projected_seconds_per_model"] = seconds * args.layers
    rec["max_rss_mb"] = max_rss_mb()
    table = (f"### probe fit, {size['n_train']} x {size['hidden']} train rows, {size['n_classes']} classes, "
             f"{args.device}, {args.threads} threads\n\n| one layer (5 weight decays x 60 epochs) | {args.layers} layers "
             f"(one model) | validation F1 macro |\n|---|---|---|\n| {seconds:.1f} s | {seconds * args.layers / 60:.1f} min "
             f"| {rec['val_f1_macro']:.3f} |\n")
    write_results("probes_real" if args.real else "probes", rec, table)
    return 0 if rec["val_f1_macro"] > 2.0 / size["n_classes"] else 1  # a probe that did not learn is a failure


if __name__ == "__main__":
    raise SystemExit(main())
