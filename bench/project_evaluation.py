"""Project the whole evaluation of one subject (27 stories, 7 layers, 95,556 voxels) from the measured benchmarks.

    python bench/project_evaluation.py [--ridge bench/out/ridge.json] [--extraction bench/out/extraction_wav2vec2.json]

Extraction: seconds = story audio / measured audio-seconds-per-second at the measured context (scaled linearly
in context length when the measurement used a shorter one). Ridge: the measured fit scaled by the cost model of
the solver (n·p² + p³ per bootstrap for the Gram matrix and its eigendecomposition, n·p·V + p²·V·n_alphas for
the voxel products), times 7 layers. Every input and scale factor is written beside the projection.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import OUT, write_results

REAL = {"audio_s": 27 * 2.0045 * 370, "n_train": 9500, "p": 3072, "v": 95556, "layers": 7, "context_s": 16.0,
        "n_alphas": 15, "n_boots": 3}


def ridge_cost(n, p, v, n_alphas, n_boots=3):
    return n_boots * (n * p * p + p ** 3 + n * p * v + p * p * v + n_alphas * 0.25 * n * p * v) + n * p * v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ridge", default=str(OUT / "ridge.json"))
    ap.add_argument("--extraction", default=str(OUT / "extraction_wav2vec2.json"))
    args = ap.parse_args(argv)
    # the projection reads two benchmarks' outputs: name the one missing and the command that writes it
    for path, command in ((args.ridge, "`python bench/bench_ridge.py`"),
                          (args.extraction, "`python bench/bench_extraction.py` at its default --audio-s 12")):
        if not Path(path).is_file():
            ap.error(f"{path}: not found; it is written by {command}, run that first")
    ridge = json.loads(Path(args.ridge).read_text())
    ext = json.loads(Path(args.extraction).read_text())
    size = ridge["size"]
    best = min(v["seconds"] for k, v in ridge["runs"].items() if k.startswith("toolkit"))
    scale = ridge_cost(REAL["n_train"], REAL["p"], REAL["v"], REAL["n_alphas"]) / \
        ridge_cost(size["n_train"], size["p"], size["v"], REAL["n_alphas"])
    ridge_s = best * scale * REAL["layers"]
    rate = ext["runs"][ext["best_toolkit"]]["audio_s_per_s"] * ext["size"]["context_s"] / REAL["context_s"]
    extract_s = REAL["audio_s"] / rate
    rec = {"inputs": {"ridge": args.ridge, "extraction": args.extraction}, "real": REAL,
           "ridge_measured_s": best, "ridge_scale_factor": scale, "ridge_projected_s_all_layers": ridge_s,
           "extraction_audio_s_per_s_at_16s_context": rate, "extraction_projected_s": extract_s,
           "total_projected_hours": (ridge_s + extract_s) / 3600, "machine": ext["machine"]}
    lines = ["### projected evaluation of one subject (27 stories, 7 layers, 95,556 voxels)", "",
             f"- feature extraction: {REAL['audio_s'] / 3600:.1f} h of audio at {rate:.2f} audio-s/s "
             f"-> {extract_s / 3600:.1f} h (once per model; shared by all subjects)",
             f"- ridge: {best:.1f} s measured at {size['n_train']}x{size['p']}x{size['v']}, x{scale:.0f} by the cost "
             f"model, x7 layers -> {ridge_s / 3600:.2f} h",
             f"- total: {rec['total_projected_hours']:.1f} h on {ext['machine']['device'] if 'device' in ext['machine'] else ext.get('device', 'cpu')} "
             f"with {ext['machine']['threads']} threads"]
    write_results("evaluation_projection", rec, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
