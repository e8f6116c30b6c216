"""Noise ceilings (Schoppe et al. 2016 cc_max) per voxel from the test-story repeats.

    python compute_noise_ceiling.py --data-dir DIR --subject UTS03 [--out subject_NCs]

Writes `<out>/<SUBJ>.npy`, float64 (V,), the file the trainer reads to select voxels with NC > 0.4.
The repeats are read one voxel block at a time, so UTS03's 2.2 GB `individual_repeats` fits in little memory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_utils import DEFAULT_NC_DIR, TEST_STORY, DataError, Ds003020, subject_id
from run_utils import save_npy_atomic
from eval_utils import noise_ceiling


def subject_noise_ceiling(data: Ds003020, subject: str, story: str = TEST_STORY, block: int = 8192) -> np.ndarray:
    """(V,) float64 cc_max of every voxel of `subject` from the repeats of `story`, in voxel blocks."""
    n_vox = data.n_voxels(subject, story)
    out = np.empty(n_vox, dtype=np.float64)
    for v0 in range(0, n_vox, block):
        idx = np.arange(v0, min(v0 + block, n_vox))
        out[idx] = noise_ceiling(data.load_repeats(subject, story, voxels=idx))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--story", default=TEST_STORY, help="the repeated story (default wheretheressmoke)")
    parser.add_argument("--out", default=str(DEFAULT_NC_DIR), help="folder for <SUBJ>.npy (default subject_NCs/)")
    args = parser.parse_args(argv)
    try:
        data = Ds003020(args.data_dir)
        nc = subject_noise_ceiling(data, subject_id(args.subject), args.story)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = Path(args.out) / f"{subject_id(args.subject)}.npy"
    save_npy_atomic(path, nc)
    print(f"{path}: {nc.size} voxels, {(nc > 0.4).sum()} above 0.4, median {np.median(nc):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
