"""The Moth Radio Hour data layer (OpenNeuro ds003020): paths, responses, stimuli, story splits.

Reads the published layout (SPEC-data.md) and nothing else:

    <root>/stimuli/<story>.wav
    <root>/derivative/respdict.json
    <root>/derivative/TextGrids/<story>.TextGrid
    <root>/derivative/preprocessed_data/<UTS0X>/<story>.hf5     (key "data", (n-20, V))

Every mismatch raises an error naming the file, the expected and the found. Run as a script to validate a
download:  python data_utils.py --data-dir DIR [--subject S] [--json]
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from file_readers import (CACHE_ENV, SAMPLE_RATE, DataError, audio_info, check_finite_audio, default_cache_dir,
                          file_fingerprint, load_wav_16k, missing_file_message, not_downloaded_hint, npy_read_problem,
                          read_text_file, visible_files)
from run_utils import EXIT_DATA, NPY_READ_ERRORS, file_sha256, positive_float, writable_dir_problem
from textgrid_utils import (TextGridError, TimedLabels, check_phone_tier, phones_from_tiers, read_textgrid,
                            words_from_tiers)
from timing import (DEFAULT_TR, AlignmentError, TRGrid, check_alignment, check_audio_duration,
                    check_transcript_duration, simulated_tr_grid)

TEST_STORY = "wheretheressmoke"
VAL_STORIES = ("stagefright", "life")
TRAIN_STORIES = (
    "alternateithicatom", "souls", "avatar", "legacy", "odetostepfather", "undertheinfluence", "howtodraw",
    "myfirstdaywiththeyankees", "naked", "tildeath", "fromboyhoodtofatherhood", "sloth", "exorcism",
    "haveyoumethimyet", "adollshouse", "inamoment", "theclosetthatateeverything", "adventuresinsayingyes",
    "buck", "swimmingwithastronauts", "thatthingonmyarm", "eyespy", "itsabox", "hangtime")
ENCODING_TRAIN_STORIES = TRAIN_STORIES + VAL_STORIES  # the evaluation's encoding model trains on all but the test

# every error that says the files on disk are wrong (missing, unreadable, misaligned): a script's exit 3
DATA_ERRORS = (DataError, AlignmentError, TextGridError, FileNotFoundError)


def subject_id(subject: str | int) -> str:
    """Normalise a subject given as 'UTS03', 'uts03', '3' or 3 to 'UTS03'."""
    m = re.fullmatch(r"(?:UTS)?0*(\d+)", str(subject).strip(), flags=re.IGNORECASE)
    if not m:
        raise DataError(f"subject must look like 'UTS03' or '3', found {subject!r}")
    return f"UTS{int(m.group(1)):02d}"


def subject_arg(text: str) -> str:
    """argparse type of --subject: `subject_id` of `text`, a usage error (exit 2) when it is not a subject id."""
    try:
        return subject_id(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ----------------------------------------------------------------------------------------------- the layout
class Ds003020:
    """Paths and readers of one ds003020 tree.

    Parameters
    ----------
    root : the dataset root holding `derivative/` and `stimuli/`.
    tr : repetition time in seconds used to simulate TR grids (recorded by callers).
    cache_dir : where resampled audio is cached (default `$BRAIN_TUNING_CACHE` or ~/.cache/brain-tuning).
    """

    def __init__(self, root: str | os.PathLike, tr: float = DEFAULT_TR, cache_dir: str | os.PathLike | None = None):
        self.root = Path(root).expanduser().resolve()
        self.tr = float(tr)
        self.derivative = self.root / "derivative"
        self.stimuli = self.root / "stimuli"
        if not self.root.exists():  # a mistyped path: its missing derivative/ would read as a layout problem
            raise DataError(f"{self.root}: no such folder (expected the ds003020 root holding 'derivative/' and "
                            f"'stimuli/')")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: expected the ds003020 folder (holding 'derivative/' and 'stimuli/'), "
                            f"found a file")
        for d in (self.derivative, self.stimuli):
            if not d.is_dir():
                # the root one level up or down (an OpenNeuro download is a folder named ds003020)
                near = [c for c in (self.root / "ds003020", self.root.parent)
                        if (c / "derivative").is_dir() and (c / "stimuli").is_dir()]
                raise DataError(f"{d}: expected a ds003020 folder here (the root must hold 'derivative/' and "
                                f"'stimuli/'), found {'a file' if d.exists() else 'nothing'}"
                                + (f"; the dataset root seems to be {near[0]}" if near else ""))
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self._respdict: dict[str, int] | None = None
        self._box_grids: dict[str, TRGrid] | None = None
        self._trfiles: Path | None = None

    def audio_cache_problem(self) -> str | None:
        """Why the resampled-audio cache (`cache_dir`/audio16k) cannot be written, else None: scripts that read
        audio check it before any work."""
        return writable_dir_problem(self.cache_dir / "audio16k", f"the resampled-audio cache (${CACHE_ENV}, else "
                                    f"~/.cache/brain-tuning, then audio16k)")

    # ------------------------------------------------------------------ metadata
    @property
    def respdict(self) -> dict[str, int]:
        """story -> respdict value ("number of TRs"; the TR grid has 5 fewer)."""
        if self._respdict is None:
            path = self.derivative / "respdict.json"
            if not path.is_file():
                raise DataError(f"{path}: missing (expected a JSON object story -> number of TRs)")
            try:
                raw = json.loads(read_text_file(path))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not valid JSON ({err})") from err
            if not isinstance(raw, dict):
                raise DataError(f"{path}: expected a JSON object of story -> integer, found {type(raw).__name__}")
            bad = {k: v for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, int)}
            if bad:
                story, value = next(iter(bad.items()))
                raise DataError(f"{path}: expected an integer number of TRs per story, found {value!r} for "
                                f"'{story}' ({len(bad)} such entries)")
            self._respdict = raw
        return self._respdict

    def subjects(self) -> list[str]:
        """Subjects with a response folder, sorted."""
        base = self.derivative / "preprocessed_data"
        if not base.is_dir():
            raise DataError(f"{base}: missing (expected one folder per subject, e.g. UTS03)")
        return sorted(p.name for p in base.iterdir() if p.is_dir() and re.fullmatch(r"UTS\d+", p.name))

    def check_story_names(self, stories: list[str], flag: str) -> None:
        """Raise DataError for a story named in `flag` that is not a story of the dataset (in no subject's
        response folder and not in respdict.json): a typo, not a story some subject lacks, which is skipped."""
        known = {p.stem for p in self.derivative.glob("preprocessed_data/UTS*/*.hf5")} | set(self._box_grids or {})
        if (self.derivative / "respdict.json").is_file() or self._box_grids is None:
            known |= set(self.respdict)
        if unknown := [s for s in stories if s not in known]:
            close = {s: difflib.get_close_matches(s, sorted(known), n=1) for s in unknown}
            hint = "; ".join(f"'{s}': did you mean '{c[0]}'?" for s, c in close.items() if c)
            raise DataError(f"{self.derivative / 'respdict.json'}: {flag} names {unknown}, not stories of this "
                            f"dataset ({len(known)} stories, e.g. {sorted(known)[:3]}){'; ' + hint if hint else ''}")

    def response_path(self, subject: str | int, story: str) -> Path:
        """derivative/preprocessed_data/<UTSxx>/<story>.hf5: the subject's (TRs, voxels) responses to the story."""
        return self.derivative / "preprocessed_data" / subject_id(subject) / f"{story}.hf5"

    def stories(self, subject: str | int) -> list[str]:
        """Stories with a response file for `subject`, sorted."""
        folder = self.derivative / "preprocessed_data" / subject_id(subject)
        if not folder.is_dir():
            raise DataError(f"{folder}: no response folder for subject {subject_id(subject)} (found subjects "
                            f"{self.subjects()})")
        return [p.stem for p in visible_files(folder, "*.hf5")]

    def n_voxels(self, subject: str | int, story: str | None = None) -> int:
        """Number of voxels V of a subject (columns of "data" of `story`, default: the first story)."""
        story = story or self.stories(subject)[0]
        with self._open_h5(self.response_path(subject, story)) as f:
            return int(self._dataset(f, "data", self.response_path(subject, story)).shape[1])

    # ------------------------------------------------------------------ timing
    def use_box_trfiles(self, path: str | os.PathLike) -> None:
        """Take TR grids from an Antonello `trfiles_huge.jbl` (restricted unpickler) instead of respdict.

        Raises DataError naming the file when it is missing, not a readable pickle, or refused as unsafe.
        """
        import pickle

        from box_pickles import UnsafePickleError, load_box_tr_grids
        try:
            self._box_grids = load_box_tr_grids(path)
        except FileNotFoundError as err:
            raise DataError(missing_file_message(path, "trfiles pickle")) from err
        except EOFError as err:
            raise DataError(f"{path}: Box trfiles pickle ends early (a truncated download?)") from err
        except (UnsafePickleError, pickle.UnpicklingError, ValueError, OSError, TypeError) as err:
            raise DataError(f"{path}: not a usable Box trfiles pickle ({err})") from err
        self._trfiles = Path(path)

    def timing_record(self) -> dict:
        """Where this dataset's TR grids come from, for a run's config: the TR, and the trfiles pickle (path and
        SHA-256) when one is used."""
        trfiles = self._trfiles
        if trfiles is None:
            return {"tr": self.tr, "tr_grids": "simulated from respdict.json (onsets k*TR - 10 s)"}
        return {"tr": self.tr, "tr_grids": "trfiles (trtimes - soundstarttime)", "trfiles": str(trfiles.resolve()),
                "trfiles_sha256": file_sha256(trfiles)}

    def tr_grid(self, story: str) -> TRGrid:
        """TR grid of `story`: from the Box TRFiles when loaded, else simulated from respdict."""
        if self._box_grids is not None:
            if story not in self._box_grids:
                raise DataError(f"{self._trfiles}: no entry for story '{story}' (a trfiles pickle of other stories?)")
            return self._box_grids[story]
        if story not in self.respdict:
            raise DataError(f"{self.derivative / 'respdict.json'}: no entry for story '{story}'")
        try:
            return simulated_tr_grid(self.respdict[story], self.tr)
        except AlignmentError as err:  # name the file and the story, not just the number
            raise AlignmentError(f"{self.derivative / 'respdict.json'}: story '{story}': {err}") from err

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _open_h5(path: Path) -> h5py.File:
        if not path.is_file():
            raise DataError(missing_file_message(path, "response file"))
        try:
            return h5py.File(path, "r")
        except OSError as err:
            raise DataError(f"{path}: not a readable HDF5 file ({err}){not_downloaded_hint(path)}") from err

    @staticmethod
    def _dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
        if key not in f:
            raise DataError(f"{path}: expected key '{key}', found keys {sorted(f.keys())}")
        return f[key]

    @classmethod
    def _response_dataset(cls, f: h5py.File, path: Path) -> h5py.Dataset:
        ds = cls._dataset(f, "data", path)
        if ds.ndim != 2:
            raise DataError(f"{path}: 'data' must be 2-D (TRs, voxels), found shape {ds.shape}")
        return cls._numeric(ds, path)

    @staticmethod
    def _numeric(ds: h5py.Dataset, path: Path) -> h5py.Dataset:
        """`ds`, checked to hold numbers; raises DataError naming the file, the key and the dtype found."""
        if not (np.issubdtype(ds.dtype, np.floating) or np.issubdtype(ds.dtype, np.integer)):
            raise DataError(f"{path}: '{ds.name.lstrip('/')}' must hold numbers (float64 in ds003020), found dtype "
                            f"{ds.dtype}")
        return ds

    def load_responses(self, subject: str | int, story: str, voxels: np.ndarray | None = None,
                       check: bool = True) -> np.ndarray:
        """Responses of one story: "data" as float32 (n_rows, V) or (n_rows, len(voxels)), NaN and ±inf -> 0.

        Parameters
        ----------
        voxels : optional sorted column indices or boolean mask of length V; read in row blocks so that
            memory stays at the subset's size.
        check : assert that the rows match the TR grid (`respdict - 20`) and the voxels the subject's other stories.
        """
        path = self.response_path(subject, story)
        with self._open_h5(path) as f:
            ds = self._response_dataset(f, path)
            if check:
                self._check_voxel_count(subject, story, ds.shape[1], path)
            out = read_columns(ds, voxels, path)
        if check:
            check_alignment(self.tr_grid(story), out.shape[0], story, where=str(path))
        return out

    def _check_voxel_count(self, subject: str | int, story: str, n_voxels: int, path: Path) -> None:
        """Raise DataError unless `n_voxels` (of `story`'s file at `path`) is the subject's V: a story with other
        columns is another subject's file, whose voxels a selection of indices would read as this subject's."""
        first = self.stories(subject)[0]
        if story != first and n_voxels != (expected := self.n_voxels(subject, first)):
            raise DataError(f"{path}: has {n_voxels} voxels but {self.response_path(subject, first)} has {expected}: "
                            f"every story of {subject_id(subject)} must have the same voxels (another subject's file?)")

    def n_response_rows(self, subject: str | int, story: str, check: bool = True) -> int:
        """Rows of a story's "data" from the file's header only (no voxel is read); `check` as in load_responses."""
        path = self.response_path(subject, story)
        with self._open_h5(path) as f:
            n_rows = int(self._response_dataset(f, path).shape[0])
        if check:
            check_alignment(self.tr_grid(story), n_rows, story, where=str(path))
        return n_rows

    def load_repeats(self, subject: str | int, story: str = TEST_STORY,
                     voxels: np.ndarray | None = None) -> np.ndarray:
        """Test-story repeats "individual_repeats" (R, n_rows, V or n_sel) float32, NaN and ±inf -> 0, read per repeat."""
        path = self.response_path(subject, story)
        with self._open_h5(path) as f:
            ds = self._repeats_dataset(f, path)
            return np.stack([read_columns(ds, voxels, path, lead=(r,)) for r in range(ds.shape[0])])

    def n_repeats(self, subject: str | int, story: str = TEST_STORY) -> int:
        """Number of repeats R of `story` ("individual_repeats" (R, n_rows, V)), from the file's header only."""
        path = self.response_path(subject, story)
        with self._open_h5(path) as f:
            return int(self._repeats_dataset(f, path).shape[0])

    @classmethod
    def _repeats_dataset(cls, f: h5py.File, path: Path) -> h5py.Dataset:
        """"individual_repeats", checked to be (R >= 2, rows, voxels) with the rows and voxels of "data" (the same
        TRs: `data[40:]` <-> `individual_repeats[:, 40:]`); raises DataError naming the file and both shapes."""
        ds = cls._dataset(f, "individual_repeats", path)
        if ds.ndim != 3:
            raise DataError(f"{path}: 'individual_repeats' must be 3-D (repeats, TRs, voxels), found shape {ds.shape}")
        if ds.shape[0] < 2:
            raise DataError(f"{path}: 'individual_repeats' holds {ds.shape[0]} repeat; a noise ceiling needs at least 2")
        cls._numeric(ds, path)
        data_shape = cls._response_dataset(f, path).shape
        if ds.shape[1:] != tuple(data_shape):
            raise DataError(f"{path}: 'individual_repeats' has shape {ds.shape} but 'data' has {tuple(data_shape)}: "
                            f"expected (repeats, {data_shape[0]}, {data_shape[1]}), the same TRs and voxels")
        return ds

    # ------------------------------------------------------------------ stimuli
    def textgrid_path(self, story: str) -> Path:
        """derivative/TextGrids/<story>.TextGrid: the story's word and phone tiers (seconds)."""
        return self.derivative / "TextGrids" / f"{story}.TextGrid"

    def words(self, story: str) -> TimedLabels:
        """Words of a story (tier 1, Huth filtering), times in seconds from audio onset."""
        return words_from_tiers(self._tiers(story), str(self.textgrid_path(story)))

    def phones(self, story: str) -> TimedLabels:
        """Phones of a story (tier 0, stress digits stripped); raises TextGridError when the tier holds none."""
        phones = phones_from_tiers(self._tiers(story), str(self.textgrid_path(story)))
        if not len(phones):  # low-level features would be silence throughout
            raise TextGridError(f"{self.textgrid_path(story)}: tier 0 holds no phone (only silence markers or empty "
                                f"labels), so no phone features for '{story}'")
        return phones

    def _tiers(self, story: str) -> list[TimedLabels]:
        """A story's TextGrid tiers, checked against its audio when the audio is there (the english1000 teacher
        needs no audio): timing.check_transcript_duration."""
        path = self.textgrid_path(story)
        try:
            tiers = read_textgrid(path)
        except FileNotFoundError as err:  # DataLad leaves annexed TextGrids as links until `datalad get`
            raise FileNotFoundError(f"{err}{not_downloaded_hint(path)}") from err
        check_phone_tier(tiers, str(path))
        if self.audio_path(story).is_file():
            # tier 0 phones, tier 1 words, as far as the file has them (phones() alone needs no word tier); empty
            # labels, words by the Huth convention, are not speech: a trailing one may run to the grid's end
            labelled = [read(tiers, str(path)) for read in (phones_from_tiers, words_from_tiers)[:len(tiers)]]
            last = max((e for t in labelled for e, label in zip(t.ends.tolist(), t.labels) if label.strip()),
                       default=float("nan"))
            check_transcript_duration(last, self.audio_seconds(story), story, str(path), str(self.audio_path(story)))
        return tiers

    def audio_path(self, story: str) -> Path:
        """Where a story's audio is read from: `stimuli/<story>/wav.npy` if present, else `stimuli/<story>.wav`."""
        ready = self.stimuli / story / "wav.npy"
        return ready if ready.is_file() else self.stimuli / f"{story}.wav"

    def missing_stimuli(self, stories: list[str], textgrids: bool = False) -> list[str]:
        """The audio files (and with `textgrids` the TextGrids) of `stories` that are absent: checked before
        hours of extraction, not found one story at a time."""
        paths = [self.audio_path(s) for s in stories] + ([self.textgrid_path(s) for s in stories] if textgrids else [])
        return [str(p) for p in paths if not p.is_file()]

    def audio_seconds(self, story: str) -> float:
        """Duration of a story's audio in seconds, from the .wav header (or the .npy's shape), without reading it."""
        path = self.audio_path(story)
        if path.suffix == ".npy":
            return len(_ready_waveform(path, mmap_mode="r")) / SAMPLE_RATE
        return float(audio_info(path).duration)

    def check_audio(self, story: str) -> None:
        """Raise AlignmentError naming the file unless the story's audio covers its TR grid (read from the header:
        cheap enough to check every story before hours of extraction)."""
        check_audio_duration(self.tr_grid(story), self.audio_seconds(story), story, where=str(self.audio_path(story)))

    def audio_fingerprint(self, story: str) -> str:
        """Identity of the story's audio file (`file_fingerprint`): what its cached features are checked against."""
        return file_fingerprint(self.audio_path(story))

    def audio(self, story: str) -> np.ndarray:
        """16 kHz mono float32 waveform of a story (`stimuli/<story>/wav.npy` if present, else the .wav), checked
        to cover the story's TR grid (timing.check_audio_duration; raises AlignmentError naming the file)."""
        path = self.audio_path(story)
        if path.suffix == ".npy":
            wav = _ready_waveform(path).astype(np.float32, copy=False)
            check_finite_audio(wav, SAMPLE_RATE, path)
        else:
            wav = load_wav_16k(path, self.cache_dir)
        check_audio_duration(self.tr_grid(story), len(wav) / SAMPLE_RATE, story, where=str(path))
        return wav


def add_timing_arguments(parser) -> None:
    """--tr and --trfiles: how every script that pairs audio with responses places the TRs."""
    parser.add_argument("--tr", type=positive_float, default=DEFAULT_TR,
                        help="repetition time in seconds (TR grids simulated from respdict.json)")
    parser.add_argument("--trfiles", help="Box trfiles_huge.jbl (Antonello et al.): each story's recorded TR times "
                                          "instead of simulated ones; give the same to tuning, teacher targets and "
                                          "evaluation")


def open_ds003020(data_dir: str | os.PathLike, tr: float = DEFAULT_TR,
                  trfiles: str | os.PathLike | None = None) -> Ds003020:
    """The dataset at `data_dir` with TR grids simulated with `tr`, or read from a Box `trfiles` pickle; raises
    DataError."""
    data = Ds003020(data_dir, tr=tr)
    if trfiles:
        data.use_box_trfiles(trfiles)
    return data


def read_columns(ds: h5py.Dataset, voxels, path: Path, lead: tuple = (), block_rows: int = 64) -> np.ndarray:
    """Read `ds[lead + (:, voxels)]` as float32 with NaN and ±inf -> 0, in row blocks (memory ~ block + output).

    `voxels` is None (all), a boolean mask over the last axis, or increasing integer indices.
    """
    n_rows, n_cols = ds.shape[-2], ds.shape[-1]
    if voxels is not None:
        voxels = np.asarray(voxels)
        if voxels.dtype == bool:
            if voxels.shape != (n_cols,):
                raise DataError(f"{path}: voxel mask has length {voxels.shape[0]} but the file has {n_cols} voxels")
            voxels = np.flatnonzero(voxels)
        if voxels.size and (voxels.min() < 0 or voxels.max() >= n_cols):
            raise DataError(f"{path}: voxel index out of range [0, {n_cols}) (found {voxels.min()}..{voxels.max()})")
    out = np.empty((n_rows, n_cols if voxels is None else len(voxels)), dtype=np.float32)
    # a run of consecutive voxels (the noise ceiling's voxel blocks) is read as a column slab, not whole rows:
    # one pass over a 2.2 GB repeats file instead of one per block
    slab = voxels is not None and voxels.size > 0 and bool(np.all(np.diff(voxels) == 1))
    for r0 in range(0, n_rows, block_rows):
        rows = slice(r0, r0 + block_rows)
        if slab:
            out[r0:r0 + block_rows] = ds[lead + (rows, slice(int(voxels[0]), int(voxels[-1]) + 1))]
        else:
            block = np.asarray(ds[lead + (rows,)], dtype=np.float32)
            out[r0:r0 + block_rows] = block if voxels is None else block[:, voxels]
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


# ----------------------------------------------------------------------------------------------- ready waveforms
def _ready_waveform(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A ready 16 kHz waveform `stimuli/<story>/wav.npy`, checked to be one readable 1-D array (`mmap_mode` "r": the
    shape without reading the samples); raises DataError naming the file and what it holds."""
    try:
        wav = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except NPY_READ_ERRORS as err:
        raise DataError(f"{path}: not a readable .npy waveform ({npy_read_problem(path, err)})") from err
    if wav.ndim != 1 or not np.issubdtype(wav.dtype, np.floating):
        raise DataError(f"{path}: expected a 1-D float 16 kHz waveform (samples,), found {wav.dtype} array of shape "
                        f"{wav.shape}")
    return wav


# ----------------------------------------------------------------------------------------------- splits
@dataclass
class StorySplit:
    """Train / validation / test stories of one subject, with what was asked for but is missing."""
    train: list[str]
    val: list[str]
    test: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "test": self.test, "missing": self.missing}


def check_story_lists(**splits: list[str]) -> None:
    """Raise DataError when a story is listed twice in one split (its TRs would count twice) or is in two splits
    (e.g. the test story among the training stories)."""
    for name, stories in splits.items():
        if twice := sorted({s for s in stories if stories.count(s) > 1}):
            raise DataError(f"stories listed more than once in the {name} split: {twice}")
    seen = [set(stories) for stories in splits.values()]
    overlap = set().union(*[a & b for i, a in enumerate(seen) for b in seen[i + 1:]])
    if overlap:
        raise DataError(f"stories in more than one split: {sorted(overlap)}")


def story_split(available: list[str], preset: str = "paper", train: list[str] | None = None,
                val: list[str] | None = None, test: list[str] | None = None) -> StorySplit:
    """Resolve a story split against the stories a subject has.

    Parameters
    ----------
    available : stories with responses for the subject.
    preset : "paper" (24 train, stagefright+life, wheretheressmoke) or "all" (every available story but
        the validation and test ones for training).
    train, val, test : explicit lists overriding the preset's.

    A requested story the subject lacks is skipped and listed in `missing` (e.g. UTS04 has no `life`).
    """
    if preset not in ("paper", "all"):
        raise DataError(f"unknown split preset {preset!r} (expected 'paper' or 'all')")
    test = list(test) if test is not None else [TEST_STORY]
    val = list(val) if val is not None else list(VAL_STORIES)
    if train is None:
        train = list(TRAIN_STORIES) if preset == "paper" else [s for s in available if s not in set(val) | set(test)]
    check_story_lists(train=train, val=val, test=test)
    have = set(available)
    missing = {name: [s for s in lst if s not in have] for name, lst in (("train", train), ("val", val), ("test", test))}
    missing = {k: v for k, v in missing.items() if v}
    split = StorySplit([s for s in train if s in have], [s for s in val if s in have], [s for s in test if s in have],
                       missing)
    if not split.train:
        raise DataError(f"none of the requested training stories has responses (asked {train[:5]}..., "
                        f"available {sorted(available)[:8]}...)")
    return split


# ----------------------------------------------------------------------------------------------- summary CLI
def summarize(data: Ds003020, subjects: list[str] | None = None) -> tuple[dict, list[str]]:
    """Check every subject and story; returns (summary dict, list of problems in the order found)."""
    problems: list[str] = []
    summary: dict = {"root": str(data.root), "tr": data.tr, "subjects": {}}
    try:
        respdict = data.respdict
        subjects = [subject_id(s) for s in subjects] if subjects else data.subjects()
    except DataError as err:
        return summary, [str(err)]
    story_cache: dict[str, dict] = {}
    for subj in subjects:
        entry: dict = {"voxels": None, "stories": {}}
        summary["subjects"][subj] = entry
        try:
            stories = data.stories(subj)
        except DataError as err:
            problems.append(str(err))
            continue
        for story in stories:
            info: dict = {"aligned": False}
            entry["stories"][story] = info
            path = data.response_path(subj, story)
            try:
                with data._open_h5(path) as f:
                    shape = data._response_dataset(f, path).shape
                    if story == TEST_STORY and "individual_repeats" in f:
                        info["repeats"] = int(data._repeats_dataset(f, path).shape[0])
                info["hf5_rows"] = int(shape[0])
                if entry["voxels"] is None:
                    entry["voxels"] = int(shape[1])
                elif shape[1] != entry["voxels"]:
                    raise DataError(f"{path}: has {shape[1]} voxels but other stories of {subj} have {entry['voxels']}")
                if story not in respdict:
                    raise DataError(f"{data.derivative / 'respdict.json'}: no entry for story '{story}'")
                grid = data.tr_grid(story)
                info["tr_grid"] = grid.n_tr
                check_alignment(grid, shape[0], story, where=str(path))
                if story not in story_cache:  # the stimuli are every subject's: checked, and a problem counted, once
                    story_cache[story] = _story_stimulus_summary(data, story)
                    if "error" in story_cache[story]:
                        problems.append(story_cache[story]["error"])
                info.update(story_cache[story])
                info["aligned"] = "error" not in info
            except (DataError, ValueError, FileNotFoundError) as err:
                problems.append(str(err))
                info["error"] = str(err)
    return summary, problems


def _story_stimulus_summary(data: Ds003020, story: str) -> dict:
    """Audio seconds and word count of a story, as far as they read, and "error": the first problem of unreadable
    files, audio that does not fit the TR grid and a TextGrid that does not fit the audio (in that order: a
    truncated audio file is named as such; the seconds are kept where the header reads, beside any problem)."""
    out: dict = {}
    try:
        out["audio_s"] = audio_s = round(data.audio_seconds(story), 3)
        check_audio_duration(data.tr_grid(story), audio_s, story, where=str(data.audio_path(story)))  # header once
        out["words"] = len(data.words(story))
    except (DataError, ValueError, FileNotFoundError) as err:
        out["error"] = str(err)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate and summarise a ds003020 download.")
    parser.add_argument("--data-dir", required=True, help="dataset root holding derivative/ and stimuli/")
    parser.add_argument("--subject", action="append", type=subject_arg,
                        help="subject (UTS03 or 3); repeatable; default all")
    add_timing_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        data = open_ds003020(args.data_dir, args.tr, args.trfiles)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA
    summary, problems = summarize(data, args.subject)
    summary["problems"] = problems
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for subj, entry in summary["subjects"].items():
            ok = sum(s["aligned"] for s in entry["stories"].values())
            print(f"{subj}: {entry['voxels']} voxels, {ok}/{len(entry['stories'])} stories aligned"
                  if entry["stories"] else f"{subj}: no response files (see the error below)")
            for story, s in entry["stories"].items():
                print(f"  {story:28s} rows={s.get('hf5_rows')} grid={s.get('tr_grid')} audio_s={s.get('audio_s')} "
                      f"words={s.get('words')} {'ok' if s['aligned'] else 'PROBLEM: ' + s.get('error', '?')}")
    if problems:
        print(f"error: {len(problems)} problem(s); first: {problems[0]}", file=sys.stderr)
        return EXIT_DATA
    return 0


if __name__ == "__main__":
    sys.exit(main())
