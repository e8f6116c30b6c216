"""Restricted loading of the Antonello et al. "Box" pickles (`grids_huge.jbl`, `trfiles_huge.jbl`).

A pickle is code. These files hold TextGrid and TRFile objects pickled under the module paths of the
Huth-lab code (`ridge_utils.textgrid`, `huth.stimulus_utils`, `ridge_utils.stimulus_utils`). The unpickler
maps exactly those (module, name) pairs to the inert local classes below and refuses every other global
except numpy's array reconstructors; object arrays are refused too (joblib would unpickle them unchecked).
"""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
from joblib import numpy_pickle

from timing import TRGrid


class BoxTextGrid:
    """Inert stand-in for `ridge_utils.textgrid.TextGrid`; `read_file` holds the original file text."""


class BoxTier:
    """Inert stand-in for `ridge_utils.textgrid.Tier`."""


class BoxTRFile:
    """Inert stand-in for `*.stimulus_utils.TRFile` (`trtimes`, `soundstarttime`, `expectedtr`, ...)."""


ALLOWED_CLASSES = {
    ("ridge_utils.textgrid", "TextGrid"): BoxTextGrid,
    ("ridge_utils.textgrid", "Tier"): BoxTier,
    ("huth.stimulus_utils", "TRFile"): BoxTRFile,
    ("ridge_utils.stimulus_utils", "TRFile"): BoxTRFile,
}


class _SafeArrayWrapper(numpy_pickle.NumpyArrayWrapper):
    """joblib's array record, refusing object dtypes (joblib would unpickle those without our checks)."""

    def read(self, unpickler, *args, **kwargs):
        if np.dtype(self.dtype).hasobject:
            raise pickle_error(unpickler, f"object array of dtype {self.dtype}")
        return super().read(unpickler, *args, **kwargs)


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(RuntimeError):
    """The pickle names a global outside the allow-list."""


def pickle_error(unpickler, what: str) -> UnsafePickleError:
    return UnsafePickleError(f"{getattr(unpickler, 'filename', '<pickle>')}: refused {what}; only the Box "
                             f"classes {sorted(m + '.' + n for m, n in ALLOWED_CLASSES)} and numpy arrays "
                             f"may be loaded")


class RestrictedUnpickler(numpy_pickle.NumpyUnpickler):
    """joblib unpickler whose `find_class` only admits the Box classes and numpy array reconstructors."""

    def find_class(self, module, name):
        if (module, name) in ALLOWED_CLASSES:
            return ALLOWED_CLASSES[(module, name)]
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module == "joblib.numpy_pickle" and name == "NumpyArrayWrapper":
            return _SafeArrayWrapper
        raise pickle_error(self, f"global '{module}.{name}'")


def _open_joblib(f, filename):
    """joblib's own reader of its (possibly compressed) container; its private name changed in joblib 1.5."""
    import contextlib
    if hasattr(numpy_pickle, "_validate_fileobject_and_memmap"):
        @contextlib.contextmanager
        def opener():
            with numpy_pickle._validate_fileobject_and_memmap(f, filename, None) as (fobj, _):
                yield fobj
        return opener()
    return numpy_pickle._read_fileobject(f, filename, None)


def restricted_load(path: str | os.PathLike):
    """Load a joblib (or plain) pickle file with the allow-list unpickler.

    Raises
    ------
    FileNotFoundError, UnsafePickleError, EOFError (a file that ends early), pickle.UnpicklingError (not a
    pickle: a JSON, text or .npy file given in its place).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Box pickle not found: {path}")
    with open(path, "rb") as f:
        # joblib's reader handles its compressed variants transparently.
        with _open_joblib(f, str(path)) as fobj:
            if isinstance(fobj, str):  # very old joblib format stores a file name
                raise UnsafePickleError(f"{path}: legacy multi-file joblib format is not supported")
            unpickler = RestrictedUnpickler(str(path), fobj, ensure_native_byte_order=True)
            try:
                return unpickler.load()
            except (KeyError, IndexError, struct.error, UnicodeDecodeError) as err:
                # pickle's pure-Python reader meets bytes that are no opcode (KeyError 123: a '{') or
                # opcodes out of order; not a pickle, whatever the name
                raise pickle.UnpicklingError(f"not a pickle ({type(err).__name__}: {err} while reading its "
                                             f"opcodes; it starts {_first_bytes(path)})") from err


def _first_bytes(path: Path, n: int = 16) -> str:
    with open(path, "rb") as f:
        return repr(f.read(n))


def load_box_textgrids(path: str | os.PathLike) -> dict[str, str]:
    """story -> original TextGrid text from `grids_huge.jbl`."""
    grids = restricted_load(path)
    out = {}
    for story, grid in dict(grids).items():
        text = getattr(grid, "read_file", None)
        if not isinstance(text, str):
            raise ValueError(f"{path}: entry '{story}' has no text attribute 'read_file' (found "
                             f"{type(text).__name__})")
        out[story] = text
    return out


def load_box_tr_grids(path: str | os.PathLike) -> dict[str, TRGrid]:
    """story -> TRGrid from `trfiles_huge.jbl`, onsets = `trtimes - soundstarttime` (absolute clocks differ)."""
    trfiles = restricted_load(path)
    out = {}
    for story, files in dict(trfiles).items():
        trf = files[0] if isinstance(files, (list, tuple)) else files
        try:
            trtimes = np.asarray(trf.trtimes, dtype=np.float64)
            start = float(trf.soundstarttime)
        except AttributeError as err:
            raise ValueError(f"{path}: TRFile of '{story}' lacks {err.name!r}") from err
        tr = float(getattr(trf, "expectedtr", np.median(np.diff(trtimes))))
        out[story] = TRGrid(onsets=trtimes - start, tr=tr, source=f"trfile:{Path(path).name}")
    return out
