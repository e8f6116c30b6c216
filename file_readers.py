"""Reading the files a user hands the toolkit: audio at any rate, text and tab-separated lists, with errors naming the file.

The data layers (data_utils for ds003020, downstream_data for the probes' datasets) read through these, so a
missing, placeholder (DataLad, Git LFS), undecodable or non-finite file gets the same DataError wherever it is met.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from atomic_io import save_npy_atomic

SAMPLE_RATE = 16000  # Hz: every model is given 16 kHz mono audio


class DataError(ValueError):
    """A file on disk does not match what the toolkit expects (the ds003020 contract, a probe dataset's layout)."""


def not_downloaded_hint(path: str | os.PathLike) -> str:
    """Why `path` cannot be read when it is the placeholder a partial download leaves, else "".

    OpenNeuro datasets come by DataLad (git-annex: a link or pointer file until `datalad get`), CREMA-D by
    Git LFS (a pointer file until `git lfs pull`); without this the user sees "missing" or a format error.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return " (a DataLad/git-annex link whose content is not downloaded: `datalad get` it)"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return ""
    if head.startswith(b"version https://git-lfs"):
        return " (a Git LFS pointer, not the file: `git lfs pull` in its repository)"
    if head.startswith(b"/annex/objects/"):
        return " (a git-annex pointer whose content is not downloaded: `datalad get` it)"
    return ""


def missing_file_message(path: str | os.PathLike, what: str) -> str:
    """Why the `what` file at `path` cannot be opened: "<path>: <what> missing", or that `path` is a folder (with
    a few of its files: the one meant is usually among them), or a download placeholder (`not_downloaded_hint`)."""
    path = Path(path)
    if path.is_dir():
        names = [p.name for p in visible_files(path, "*") if p.is_file()]
        inside = f"; it holds {names[:4]}{' ...' if len(names) > 4 else ''}" if names else "; it holds no file"
        return f"{path}: a folder, expected the {what}{inside}"
    return f"{path}: {what} missing{not_downloaded_hint(path)}"


def npy_read_problem(path: str | os.PathLike, err: Exception) -> str:
    """Why `np.load(path, allow_pickle=False)` raised `err`, in words that name what the file holds.

    numpy calls any file that is neither .npy nor .npz "pickled data" and suggests loading it unsafely; a file
    given to the toolkit is never unpickled (it could run code), so that advice is replaced by what was found.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return f"{type(err).__name__}: {err}"
    if not head:
        return "the file is empty"
    if not head.startswith((b"\x93NUMPY", b"PK")):
        return (f"not a .npy or .npz file: it starts with {head!r}, where a .npy starts with b'\\x93NUMPY' and a .npz "
                f"with b'PK'{not_downloaded_hint(path)}")
    if "allow_pickle" in str(err):
        return "it holds pickled (object) arrays, which are never loaded since unpickling can run code; save numeric arrays"
    return f"{type(err).__name__}: {err}"


def visible_files(folder: Path, pattern: str) -> list[Path]:
    """`folder.glob(pattern)`, sorted, without hidden files: pathlib's glob matches names starting with ".", such
    as the "._<name>" AppleDouble files a copy through macOS leaves beside each file (metadata, not data)."""
    return sorted(p for p in Path(folder).glob(pattern) if not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------- audio
CACHE_ENV = "BRAIN_TUNING_CACHE"


def default_cache_dir() -> Path:
    """`$BRAIN_TUNING_CACHE`, else ~/.cache/brain-tuning: resampled audio and model features live there."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "brain-tuning"))


def audio_info(path: str | os.PathLike):
    """soundfile's header information (samplerate, frames, duration) of an audio file, without reading it;
    raises DataError naming a missing or unreadable file."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise DataError(missing_file_message(path, "audio file"))
    try:
        return sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError on bad headers
        raise DataError(f"{path}: unreadable audio ({err}){not_downloaded_hint(path)}") from err


def file_fingerprint(path: str | os.PathLike) -> str:
    """A file's identity for the caches derived from it: absolute path, size and modification time (a file replaced
    or another dataset's file of the same name gives another), without reading it."""
    path = Path(path)
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def load_wav_16k(path: Path, cache_dir: Path | None = None) -> np.ndarray:
    """Read a WAV at any rate/channels/bit depth, mix to mono, resample to 16 kHz float32 (cached as .npy)."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise DataError(missing_file_message(path, "audio file"))
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(file_fingerprint(path).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / "audio16k" / f"{path.stem}-{key}.npy"
        if cache.is_file():
            wav = np.load(cache, allow_pickle=False)
            check_finite_audio(wav, SAMPLE_RATE, path)  # a cache written before this check
            return wav
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError on bad headers
        raise DataError(f"{path}: unreadable audio ({err}){not_downloaded_hint(path)}") from err
    check_finite_audio(data, rate, path)
    wav = resample_to_16k(data.mean(axis=1), rate)
    if cache is not None:
        save_npy_atomic(cache, wav)
    return wav


def check_finite_audio(wav: np.ndarray, rate: int, path) -> None:
    """Raise DataError naming `path` when the (samples,) or (samples, channels) waveform at `rate` Hz holds NaN or
    inf (a float WAV written from bad data): the model would turn them into NaN features or gradients, and the
    error would then blame the model's weights or the learning rate, not the file."""
    bad = ~np.isfinite(wav)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(wav), -1).any(axis=1))[0])
        raise DataError(f"{path}: {int(bad.sum())} audio sample(s) are NaN or inf, the first at {first / rate:.3f} s; "
                        f"expected finite samples")


def resample_to_16k(wav: np.ndarray, rate: int) -> np.ndarray:
    """(n,) mono waveform at `rate` Hz -> (m,) float32 at 16 kHz (soxr, high quality)."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(wav, dtype=np.float32)
    import soxr
    return soxr.resample(np.asarray(wav, dtype=np.float32), rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


# ----------------------------------------------------------------------------------------------- text
def read_text_file(path: str | os.PathLike) -> str:
    """A text file's content: UTF-8 with or without a byte-order mark, or UTF-16 with one (Excel's "Unicode Text").

    Raises DataError naming the file, the offending byte and its offset for anything else (a binary file, a
    damaged download, another encoding), where Python would raise a UnicodeDecodeError that names no file.
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-16") if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: expected UTF-8 (or UTF-16 with a byte-order mark) text, found byte "
                        f"{raw[err.start]:#04x} at offset {err.start}: a damaged or binary file? Save it as UTF-8"
                        ) from None


def read_tsv(path: str | os.PathLike, header: list[str]) -> list[tuple[int, list[str]]]:
    """Rows after the header of a tab-separated list (blank and '#' lines skipped), with their line numbers in the file.

    Read as a spreadsheet saves it too: UTF-8 with or without a byte-order mark, UTF-16 with one (Excel's "Unicode
    Text"), any line ending, spaces around a cell dropped (an "animal " label would otherwise be a class of its own).
    Raises DataError naming the file, and for a wrong header the expected header and the found first row.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(missing_file_message(path, f"tab-separated list with header {'<TAB>'.join(header)!r}"))
    if not path.is_file():
        raise DataError(f"{path}: file missing (expected a tab-separated list with header {'<TAB>'.join(header)!r})")
    rows = [(i, [cell.strip() for cell in l.split("\t")])
            for i, l in enumerate(read_text_file(path).splitlines(), 1)
            if l.strip() and not l.startswith("#")]
    if not rows or rows[0][1] != header:
        found = str(rows[0][1]) if rows else "an empty file"
        found = found if len(found) <= 120 else found[:120] + f"... ({len(found)} characters)"  # another kind of file
        raise DataError(f"{path}: expected header {'<TAB>'.join(header)!r}, found {found}")
    return rows[1:]
