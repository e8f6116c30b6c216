"""Noise ceilings from a repeats file of real size: time and peak memory, read in voxel blocks vs all at once.

    python bench/bench_noise_ceiling.py            # reduced: 10 repeats x 291 TRs x 20,000 voxels (0.5 GB file)
    python bench/bench_noise_ceiling.py --real     # UTS03's size: 10 x 291 x 95,556 voxels float64 (2.2 GB file)

Writes a ds003020-layout folder with one `wheretheressmoke.hf5` ("data" (291, V) and "individual_repeats"
(10, 291, V), float64 like the real files, contiguous) under --work (default bench/out/nc_data, deleted after),
then times `compute_noise_ceiling.subject_noise_ceiling` (voxel blocks of 8192, the script's path) against
reading the whole repeats array and calling `eval_utils.noise_ceiling` once. Each in its own process, so that
the peak resident memory is the method's. Checks: both give the same cc_max (within 1e-9). The file was just
written, so it is read from the page cache: a cold read from a cluster's file system adds its transfer time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import OUT, REPO, machine, peak_rss, pin_threads, rss_mb, write_results

SIZES = {"reduced": dict(n_repeats=10, n_rows=291, n_voxels=20000),
         "real": dict(n_repeats=10, n_rows=291, n_voxels=95556)}
SUBJECT, STORY = "UTS03", "wheretheressmoke"


def write_repeats(root: Path, n_repeats: int, n_rows: int, n_voxels: int, seed: int = 0, block: int = 8192) -> Path:
    """A minimal ds003020 root whose subject holds the test story's responses and repeats (signal + noise)."""
    import h5py
    (root / "stimuli").mkdir(parents=True, exist_ok=True)
    folder = root / "derivative" / "preprocessed_data" / SUBJECT
    folder.mkdir(parents=True, exist_ok=True)
    (root / "derivative" / "respdict.json").write_text(json.dumps({STORY: 311}))
    rng = np.random.default_rng(seed)
    path = folder / f"{STORY}.hf5"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", (n_rows, n_voxels), dtype="f8")
        reps = f.create_dataset("individual_repeats", (n_repeats, n_rows, n_voxels), dtype="f8")
        for v0 in range(0, n_voxels, block):  # in voxel blocks: the writer's memory stays small too
            v1 = min(v0 + block, n_voxels)
            signal = rng.standard_normal((n_rows, v1 - v0)) * rng.uniform(0, 0.25, v1 - v0)  # about half above NC 0.4
            noisy = signal + rng.standard_normal((n_repeats, n_rows, v1 - v0))
            reps[:, :, v0:v1] = noisy
            data[:, v0:v1] = noisy.mean(axis=0)
    return path


def run_method(method: str, root: Path, threads: int) -> dict:
    """One method in this process: cc_max, seconds, peak resident MB."""
    pin_threads(threads)
    from compute_noise_ceiling import subject_noise_ceiling
    from data_utils import Ds003020
    from eval_utils import noise_ceiling
    record = {"rss_after_imports_mb": rss_mb()}
    t0 = time.perf_counter()
    with peak_rss(record, "peak_rss_mb"):
        data = Ds003020(root)
        if method == "blocks":
            cc_max = subject_noise_ceiling(data, SUBJECT, STORY)
        else:
            cc_max = noise_ceiling(data.load_repeats(SUBJECT, STORY))
    record["seconds"] = time.perf_counter() - t0
    np.save(root / f"cc_max_{method}.npy", cc_max)
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true", help="UTS03's size (2.2 GB file, ~10 GB memory for 'whole')")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=str(OUT / "nc_data"), help="folder for the generated file (deleted after)")
    p.add_argument("--method", choices=["blocks", "whole"], help=argparse.SUPPRESS)  # the child process's job
    args = p.parse_args(argv)
    root = Path(args.work)
    if args.method:
        print(json.dumps(run_method(args.method, root, args.threads)))
        return 0
    size = SIZES["real" if args.real else "reduced"]
    t0 = time.perf_counter()
    path = write_repeats(root, **size)
    write_s = time.perf_counter() - t0
    results = {"size": size, "file_gb": path.stat().st_size / 2 ** 30, "write_seconds": write_s,
               "machine": machine(args.threads)}
    try:
        for method in ("blocks", "whole"):
            out = subprocess.run([sys.executable, __file__, "--method", method, "--work", str(root),
                                  "--threads", str(args.threads)], capture_output=True, text=True, cwd=REPO)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return 1
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        blocks, whole = (np.load(root / f"cc_max_{m}.npy") for m in ("blocks", "whole"))
        results["max_abs_difference"] = float(np.nanmax(np.abs(blocks - whole)))
        results["above_0.4"] = int((blocks > 0.4).sum())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ok = results["max_abs_difference"] <= 1e-9
    table = "\n".join([
        f"# Noise ceiling: {size['n_repeats']} repeats x {size['n_rows']} TRs x {size['n_voxels']} voxels "
        f"({results['file_gb']:.2f} GB float64), {args.threads} threads",
        "", "| method | seconds | peak resident MB | of it, after imports |", "|---|---|---|---|",
        *[f"| {m} | {results[m]['seconds']:.1f} | {results[m]['peak_rss_mb']:.0f} | "
          f"{results[m]['rss_after_imports_mb']:.0f} |" for m in ("blocks", "whole")],
        "", f"same cc_max: {'yes' if ok else 'NO'} (largest difference {results['max_abs_difference']:.2e}); "
        f"{results['above_0.4']} voxels above 0.4; file written in {write_s:.1f} s", ""])
    write_results("noise_ceiling" + ("_real" if args.real else ""), results, table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
