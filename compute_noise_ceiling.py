"""Noise ceilings (Schoppe et al. 2016 cc_max) per voxel from the test-story repeats.

    python compute_noise_ceiling.py --data-dir DIR --subject UTS03 [--out subject_NCs]

Writes `<out>/<SUBJ>.npy`, float64 (V,), the file the trainer reads to select voxels with NC > 0.4, and beside
it `<out>/<SUBJ>.json`: how it was made (data folder, story, repeats, rows, voxels, count above 0.4, command,
package and toolkit versions). Exit codes: 0 done, 2 bad flags, 3 data error (the message names the file), 6 a
write failed. The repeats are read one voxel block at a time, so UTS03's 2.2 GB `individual_repeats` fits in little
memory.

Rows: every row of `individual_repeats` by default (SPEC-methods.md §6 names no trimming). The evaluation scores
the test story's `data[40:]` only; `--first-row 40` estimates the ceiling on those same rows instead (the
story's first 80 s can hold an onset response, repeated in every presentation). Trainer and evaluation read
whichever file is there: compute it once, one way, per subject.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from atomic_io import WriteError, save_npy_atomic, write_json_atomic, write_together
from data_utils import TEST_STORY, DataError, Ds003020, subject_arg
from run_utils import EXIT_DATA, EXIT_USAGE, EXIT_WRITE, creatable_problem, creation_record, nonnegative_int
from eval_utils import noise_ceiling
from voxel_selection import DEFAULT_NC_DIR


def subject_noise_ceiling(data: Ds003020, subject: str, story: str = TEST_STORY, block: int = 8192,
                          first_row: int = 0) -> np.ndarray:
    """(V,) float64 cc_max of every voxel of `subject` from the repeats of `story`, in voxel blocks.

    `first_row` : rows of the repeats (TRs of the response file) before it are left out; 0 uses them all.
    Raises DataError naming the file when fewer than 2 rows would remain.
    """
    data.stories(subject)  # a subject without a folder is named with the dataset's subjects, not as one missing file
    data.n_repeats(subject, story)  # the repeats' own checks first: a file without them is named as such
    n_vox, n_rows = data.n_voxels(subject, story), data.n_response_rows(subject, story, check=False)
    if n_rows - first_row < 2:
        raise DataError(f"{data.response_path(subject, story)}: --first-row {first_row} leaves "
                        f"{max(n_rows - first_row, 0)} of its {n_rows} rows; a noise ceiling needs at least 2 (expected "
                        f"a first row below {n_rows - 1})")
    out = np.empty(n_vox, dtype=np.float64)
    for v0 in range(0, n_vox, block):
        idx = np.arange(v0, min(v0 + block, n_vox))
        out[idx] = noise_ceiling(data.load_repeats(subject, story, voxels=idx)[:, first_row:])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="ds003020 root (holds derivative/ and stimuli/)")
    parser.add_argument("--subject", required=True, type=subject_arg, help="UTS03 or 3")
    parser.add_argument("--story", default=TEST_STORY, help="the repeated story (default wheretheressmoke)")
    parser.add_argument("--out", default=str(DEFAULT_NC_DIR), help="folder for <SUBJ>.npy (default subject_NCs/)")
    parser.add_argument("--first-row", type=nonnegative_int, default=0,
                        help="leave out the repeats' rows before this one (40: the rows the evaluation scores); "
                             "default 0, every row")
    args = parser.parse_args(argv)
    subject = args.subject
    if (problem := creatable_problem(Path(args.out) / f"{subject}.npy", "the noise-ceiling file")) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        data = Ds003020(args.data_dir)
        data.check_story_names([args.story], "--story")
        nc = subject_noise_ceiling(data, subject, args.story, first_row=args.first_row)
        n_repeats = data.n_repeats(subject, args.story)
        n_rows = data.n_response_rows(subject, args.story, check=False)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA
    path = Path(args.out) / f"{subject}.npy"
    record = creation_record({
        "subject": subject, "story": args.story, "data_dir": str(Path(args.data_dir).resolve()),
        "n_repeats": int(n_repeats), "rows": [args.first_row, int(n_rows)], "n_voxels": int(nc.size),
        "above_0.4": int((nc > 0.4).sum()),
        "median": float(np.median(nc)), "formula": "eval_utils.noise_ceiling (Schoppe et al. 2016 cc_max)"})
    try:  # the ceiling and its record replace the earlier pair together, or not at all
        write_together({path: lambda p: save_npy_atomic(p, nc),
                        path.with_suffix(".json"): lambda p: write_json_atomic(p, record)})
    except WriteError as err:  # a full disk or quota
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WRITE
    print(f"{path}: {nc.size} voxels, {(nc > 0.4).sum()} above 0.4, median {np.median(nc):.3f} "
          f"(rows {args.first_row}:{n_rows} of {n_repeats} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
