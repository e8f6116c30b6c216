"""ROI files from the dataset's pycortex store: {roi: [column indices of the hf5 "data"]} per subject.

    python pycortex_rois.py --data-dir /path/to/ds003020 --subject UTS03 --out rois/UTS03.json [--rois AC Broca]

Column i of a response file is the i-th True voxel (C order) of the subject's `mask_thick` in
`derivative/pycortex-db/<SUBJ>/transforms/<SUBJ>_auto/`; an ROI's voxels are the mask voxels that pycortex's
`get_roi_masks` assigns to it (cortical sampler, both hemispheres). pycortex is optional (it builds C
extensions from a 70 MB sdist); without it this script says so and exits 4, and any ROI file works instead.
Untested here against pycortex itself and the real store (neither available offline); the voxel mapping is
tested on arrays, the calls to pycortex through a stand-in module.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from atomic_io import write_json_atomic
from data_utils import DataError, subject_arg
from run_utils import EXIT_DATA, EXIT_MISSING_DEP, creation_record


def mask_columns(mask: np.ndarray, roi_mask: np.ndarray) -> list[int]:
    """Response columns of the voxels of `roi_mask` (both (Z, Y, X) volumes; columns = True voxels of `mask`, C order)."""
    if mask.shape != roi_mask.shape:
        raise DataError(f"ROI volume shape {roi_mask.shape} differs from the mask shape {mask.shape}")
    column = np.full(mask.shape, -1, dtype=np.int64)
    column[mask.astype(bool)] = np.arange(int(mask.astype(bool).sum()))
    cols = column[roi_mask.astype(bool) & mask.astype(bool)]
    return sorted(int(c) for c in cols)


def rois_from_store(store: Path, subject: str, roi_names: list[str] | None = None, xfm: str | None = None) -> dict:
    """{roi: columns} built with pycortex from the store at `store` (the `pycortex-db` folder)."""
    try:
        import cortex
    except ImportError as err:
        raise ImportError("building ROIs from the pycortex store needs pycortex (optional: pip install pycortex); "
                          "or pass an ROI file {name: [voxel indices]} with --roi-file") from err
    if not (store / subject).is_dir():
        raise DataError(f"{store}: no pycortex subject folder '{subject}' (expected derivative/pycortex-db/{subject}/)")
    cortex.database.default_filestore = str(store)
    cortex.db = cortex.database.Database(str(store))
    xfm = xfm or f"{subject}_auto"
    mask = cortex.db.get_mask(subject, xfm, "thick")
    roi_masks = cortex.utils.get_roi_masks(subject, xfm, roi_list=roi_names, gm_sampler="cortical",
                                           split_lr=False, return_dict=True)
    return {name: mask_columns(mask, m > 0) for name, m in roi_masks.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="ds003020 root (holds derivative/pycortex-db/)")
    p.add_argument("--subject", required=True, type=subject_arg, help="UTS03 or 3")
    p.add_argument("--out", required=True, help="ROI JSON to write")
    p.add_argument("--rois", nargs="+", help="ROI names of the store (default: all)")
    p.add_argument("--xfm", help="transform name (default <SUBJ>_auto)")
    args = p.parse_args(argv)
    subject = args.subject
    try:
        rois = rois_from_store(Path(args.data_dir) / "derivative" / "pycortex-db", subject, args.rois, args.xfm)
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MISSING_DEP
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA
    out = Path(args.out)
    rois["_note"] = f"built by pycortex_rois.py from {args.data_dir} ({subject}, mask_thick)"
    # "_" keys are not ROIs to load_roi_file: the record travels inside the file it describes
    rois["_subject"] = subject  # load_roi_file refuses the file for another subject
    rois["_made_by"] = creation_record({"data_dir": args.data_dir, "subject": subject,
                                        "xfm": args.xfm or f"{subject}_auto", "rois": args.rois})
    write_json_atomic(out, rois)
    print(f"{sum(not k.startswith('_') for k in rois)} ROIs written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
