"""Run bookkeeping shared by the scripts: seeds, package versions, atomic writes, run configs."""
from __future__ import annotations

import csv
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

PACKAGES = ("torch", "transformers", "peft", "numpy", "scipy", "h5py", "scikit-learn", "librosa", "soundfile",
            "soxr", "textgrid", "matplotlib", "safetensors")


def package_versions() -> dict:
    """Versions of Python and the packages that shape results (absent ones are reported as None)."""
    from importlib import metadata
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to a temp file and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rows of dicts (same keys) as CSV, written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


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


def resolve_precision(choice: str, device) -> str:
    """The --precision flag resolved: "auto" means bf16 autocast on CUDA and fp32 elsewhere."""
    if choice != "auto":
        return choice
    return "bf16" if getattr(device, "type", str(device)) == "cuda" else "fp32"


def command_line() -> str:
    return " ".join([Path(sys.executable).name] + sys.argv)


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
