"""Which voxels a run uses: a subject's noise-ceiling file, the NC threshold mask and ROI files.

    subject_NCs/<SUBJ>.npy      (V,) cc_max per voxel (compute_noise_ceiling.py writes it)
    <roi file>.json             {roi name: [voxel indices]} (pycortex_rois.py and the miniature write it)

Every file is checked against the subject's voxel count; a mismatch raises DataError naming the file, the
expected and the found.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from data_utils import DataError, subject_id
from file_readers import missing_file_message, npy_read_problem
from run_utils import NPY_READ_ERRORS, load_npz

NC_THRESHOLD = 0.4
DEFAULT_NC_DIR = Path(__file__).resolve().parent / "subject_NCs"


def nc_path(subject: str | int, nc_dir: str | os.PathLike | None = None) -> Path:
    """`<nc_dir>/<SUBJ>.npy`, the subject's noise-ceiling file (nc_dir: subject_NCs/ of the toolkit by default)."""
    return Path(nc_dir or DEFAULT_NC_DIR) / f"{subject_id(subject)}.npy"


def nc_dir_problem(nc_dir: str | os.PathLike, file_flag: str | None = None) -> str | None:
    """A usage problem when `nc_dir` (--nc-dir) is a file, not the folder of <SUBJ>.npy files, else None.

    Without this a file given as --nc-dir is read as a folder lacking <SUBJ>.npy (`UTS01.npy/UTS01.npy`).
    `file_flag` names the script's flag that takes one file instead, if it has one.
    """
    if not Path(nc_dir).is_file():
        return None
    instead = f", or give the file as {file_flag}" if file_flag else ""
    return (f"--nc-dir {nc_dir} is a file; it takes the folder that holds <SUBJ>.npy (here {Path(nc_dir).parent})"
            f"{instead}")


def load_noise_ceiling(subject: str | int, n_voxels: int | None = None, nc_file: str | os.PathLike | None = None,
                       nc_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Noise ceiling (V,) float64 of a subject from `subject_NCs/<SUBJ>.npy` (or `nc_file`), checked: one value per
    voxel, finite values in [0, 1] (cc_max), at least one finite. NaN values are kept (such voxels pass no floor)."""
    path = Path(nc_file) if nc_file else nc_path(subject, nc_dir)
    if path.is_dir():
        raise DataError(missing_file_message(path, "noise-ceiling file"))
    if not path.is_file():
        raise DataError(f"{path}: noise-ceiling file missing; create it with "
                        f"`python compute_noise_ceiling.py --data-dir DIR --subject {subject_id(subject)}`")
    try:
        nc = np.load(path, allow_pickle=False)
    except NPY_READ_ERRORS as err:
        raise DataError(f"{path}: not a readable .npy array of noise ceilings ({npy_read_problem(path, err)})") from err
    if nc.ndim != 1:
        raise DataError(f"{path}: expected a 1-D vector of one value per voxel, found shape {nc.shape}")
    if n_voxels is not None and nc.shape[0] != n_voxels:
        raise DataError(f"{path}: noise ceiling has {nc.shape[0]} values but subject {subject_id(subject)} has "
                        f"{n_voxels} voxels")
    if not np.issubdtype(nc.dtype, np.number) or np.iscomplexobj(nc):
        raise DataError(f"{path}: expected real noise-ceiling values (cc_max), found dtype {nc.dtype}")
    nc = nc.astype(np.float64)
    finite = nc[np.isfinite(nc)]
    if not finite.size:
        raise DataError(f"{path}: no finite noise-ceiling value among its {nc.size} voxels")
    # cc_max of z-scored repeats lies in [0, 1]; values outside it are another quantity (a percentage, say)
    if finite.min() < 0 or finite.max() > 1 + 1e-9:  # (rounding may put identical repeats' 1 a bit above)
        outside = int(((finite < 0) | (finite > 1 + 1e-9)).sum())
        raise DataError(f"{path}: expected noise ceilings (cc_max) in [0, 1], found {outside} of {nc.size} values "
                        f"outside (min {finite.min():.4g}, max {finite.max():.4g})")
    return nc


def nc_voxel_mask(noise_ceiling: np.ndarray, threshold: float = NC_THRESHOLD, source: str = "noise ceiling") -> np.ndarray:
    """Boolean (V,) mask of voxels with NC > threshold; raises when none pass."""
    mask = np.nan_to_num(noise_ceiling, nan=0.0) > threshold
    if not mask.any():
        raise DataError(f"{source}: no voxel has a noise ceiling above {threshold} (max "
                        f"{np.nanmax(noise_ceiling):.3f}); lower --nc-threshold")
    return mask


def other_story_ceiling_note(nc_file: str | Path, test_story: str, default_story: str) -> str | None:
    """A line for the log when the noise-ceiling file was computed from the repeats of another story than the one
    the alignment is scored on (the story its `<SUBJ>.json` record names, written by compute_noise_ceiling.py; without
    a readable record, `default_story`, the dataset's repeated one): its cc_max is then a ceiling measured elsewhere.
    None when the stories agree."""
    try:
        story = json.loads(Path(nc_file).with_suffix(".json").read_text()).get("story")
    except (OSError, ValueError, AttributeError):
        story = None
    story = story if isinstance(story, str) else None  # a record naming no story is no record of one
    measured = story or default_story
    if measured == test_story:
        return None
    return (f"note: cc_max of {nc_file} (the repeats of '{measured}'{'' if story else ', presumably'}) normalises the "
            f"alignment on '{test_story}', a story it was not measured on")


def load_roi_file(path: str | os.PathLike, n_voxels: int | None = None,
                  subject: str | None = None) -> dict[str, np.ndarray]:
    """ROIs from a JSON file {name: [voxel indices]} (or .npz of index arrays) -> name -> sorted int array.

    Keys starting with "_" are metadata. A JSON file that names its subject ("_subject", written by
    pycortex_rois.py and the miniature) must name `subject` when it is given: another subject's voxel indices
    usually fit this subject's range, so nothing else would catch it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(missing_file_message(path, "ROI file"))
    try:
        if path.suffix == ".npz":
            raw = load_npz(path)
        else:
            raw = json.loads(path.read_text())
    except NPY_READ_ERRORS as err:  # JSONDecodeError is a ValueError; so are pickled .npz arrays
        detail = npy_read_problem(path, err) if path.suffix == ".npz" else str(err)
        raise DataError(f"{path}: not a readable ROI file ({detail})") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object {{roi name: [voxel indices]}}, found {type(raw).__name__}")
    recorded = raw.get("_subject")
    if subject is not None and recorded is not None and recorded != subject:
        raise DataError(f"{path}: ROIs of subject {recorded!r}, expected {subject!r} (each subject has its own voxels)")
    try:
        rois = {k: np.asarray(v) for k, v in raw.items() if not k.startswith("_")}
    except ValueError as err:  # ragged nested lists
        raise DataError(f"{path}: ROI values must be flat lists of voxel indices ({err})") from err
    out = {}
    for name, idx in rois.items():
        if idx.size == 0:  # an empty JSON list reads as float64
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not (idx.dtype == bool or np.issubdtype(idx.dtype, np.integer)):
            raise DataError(f"{path}: ROI '{name}' must be a list of integer voxel indices or a boolean mask, found "
                            f"{idx.dtype} array of shape {idx.shape}")
        if idx.dtype == bool and n_voxels is not None and idx.shape[0] != n_voxels:
            raise DataError(f"{path}: ROI '{name}' is a mask of length {idx.shape[0]} but the subject has {n_voxels} "
                            f"voxels")
        idx = np.flatnonzero(idx) if idx.dtype == bool else np.unique(idx.astype(np.int64))
        if n_voxels is not None and idx.size and (idx.min() < 0 or idx.max() >= n_voxels):
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise DataError(f"{path}: ROI '{name}' has voxel index {bad} but the subject has {n_voxels} voxels "
                            f"(expected 0..{n_voxels - 1})")
        out[name] = idx
    return out
