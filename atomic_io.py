"""Writing outputs so that a kill or a full disk never leaves a half-written one: atomic file writes, files
replaced together, folder swaps, and `WriteError` naming the file and the free space."""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np


def unique_temp_path(path: Path) -> Path:
    """A hidden temporary name beside `path` that no other writer uses: jobs on other hosts or in other containers
    sharing the file system (a feature cache in $HOME) can have this process's id (in a container often 1)."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


class WriteError(Exception):
    """An output could not be written (a full disk or quota, a storage fault); names the file and the free space."""


# How torch's zip writer (a RuntimeError: "... inline_container.cc ... unexpected pos 576 vs 534") and safetensors
# ("Error while serializing: I/O error: ...") report a failed write; neither names the file, nor do numpy's OSErrors.
_WRITE_FAILURE_TEXT = ("I/O error", "inline_container", "PytorchStreamWriter", "file write failed",
                       "No space left on device", "Disk quota exceeded")


def _is_write_failure(err: Exception) -> bool:
    """Whether `err`, raised while writing, is the storage failing (any OSError, or a library's error that says so)
    rather than a bug in what was being written (a tensor sharing memory, an object JSON cannot hold)."""
    return isinstance(err, OSError) or any(text in str(err) for text in _WRITE_FAILURE_TEXT)


def _free_space(path: Path) -> str:
    """The free space of the file system holding `path` (or its nearest existing ancestor), for an error message."""
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    full = " (full)" if free < 2 ** 20 else ""
    return f"{_size_text(free)} free on its file system{full}"


def _size_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


@contextlib.contextmanager
def writing(path: str | os.PathLike, partial: str | os.PathLike | None = None):
    """Re-raise a failure of the writes in the block as a `WriteError` naming `path` and the free space there;
    `partial` (a file or folder the failed write leaves behind) is removed first, so a full disk gets no fuller.
    Every output goes through here: a script turns the error into exit code `EXIT_WRITE` (`run_utils.exit_code`)."""
    path = Path(path)
    try:
        yield
    except WriteError:
        raise
    except Exception as err:
        if not _is_write_failure(err):
            raise
        if partial is not None and Path(partial).is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        elif partial is not None:
            Path(partial).unlink(missing_ok=True)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise WriteError(
            f"{path}: could not be written ({type(err).__name__}: {detail}); {_free_space(path)}. What was "
            f"written before stays whole (outputs are written beside their place and renamed into it): free "
            f"space (or quota) or write elsewhere, then run the same command again (brain_trainer_story.py: with "
            f"--resume, from its last saved epoch)") from err


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate every block of the file `path` (a memory map just created, sparse), so that a full disk or quota
    fails here as an OSError instead of killing the process later with SIGBUS ("Bus error", no message) when a
    page of the map is written. Where the file system lacks fallocate, glibc writes a byte per block instead (quick:
    blocks of network file systems are large); where that too is refused, the free space is checked."""
    path = Path(path)
    size = path.stat().st_size
    if hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(err.errno, f"{err.strerror} ({_size_text(size)} needed)") from err
        finally:
            os.close(fd)
    if (free := shutil.disk_usage(path.parent).free) < size:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({_size_text(size)} needed, {_size_text(free)} free)")


def _write_atomic(path: str | os.PathLike, write, binary: bool = False) -> None:
    """Call `write(file)` on a temp file beside `path`, then rename it over `path`: a kill at any point leaves
    either the old file or the complete new one, never a truncated one; an exception leaves no temp file (a
    failed write raises `WriteError` naming `path`)."""
    path = Path(path)
    tmp = unique_temp_path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "xb") if binary else open(tmp, "x", newline="") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # the rename must not reach the disk before the data
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """`obj` as JSON (numpy scalars and arrays, paths converted), written atomically."""
    text = to_json(obj, indent=1)  # a serialisation error leaves `path` untouched
    _write_atomic(path, lambda f: f.write(text))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`text` written atomically."""
    _write_atomic(path, lambda f: f.write(text))


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """`array` as .npy (no pickles), written atomically."""
    _write_atomic(path, lambda f: np.save(f, array, allow_pickle=False), binary=True)


def write_together(writes: dict) -> None:
    """Replace several files as one output: `writes` maps each path to a function writing it atomically at a path
    it is given (`save_npy_atomic`, `write_json_atomic`, ...). All are written under temporary names beside their
    places first and renamed in only when every write succeeded, so that a failed one (WriteError) leaves the
    earlier files as they were, never a new one beside the record of another (a kill between two renames aside)."""
    writes = {Path(path): write for path, write in writes.items()}
    staged = {path: unique_temp_path(path) for path in writes}
    try:
        for path, tmp in staged.items():
            try:
                writes[path](tmp)
            except WriteError as err:  # named after its place, not its temporary name
                raise WriteError(str(err).replace(str(tmp), str(path))) from err
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Named arrays as an uncompressed .npz, written atomically."""
    _write_atomic(path, lambda f: np.savez(f, **arrays), binary=True)


def write_csv_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rows of dicts (same keys, the first row's order) as CSV, written atomically; no rows: an empty file."""
    def write(f):
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    _write_atomic(path, write)


def replace_dir(tmp_dir: Path, final: Path) -> None:
    """Swap a fully written `tmp_dir` into place as `final` (old copy kept as `final.old` until the swap ends)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_dir, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> Path | None:
    """`final`, or its `.old` copy when a kill fell between the two renames of `replace_dir`."""
    old = final.with_name(final.name + ".old")
    if final.is_dir():
        return final
    return old if old.is_dir() else None


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj, indent: int | None = None) -> str:
    """`obj` as JSON text, numpy scalars and arrays and paths converted (what `write_json_atomic` writes)."""
    return json.dumps(obj, indent=indent, default=_json_default)
