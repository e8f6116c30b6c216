"""Front-end cache: the frozen bottom of a brain-tuned model computed once per window instead of every epoch.

The frozen convolutional feature encoder (Whisper: log-mel, convolutions and positions, plus frozen
dropout-free bottom blocks) maps a training window to the same output in every epoch. `build_front_end_cache`
runs it once over all windows of a `training.WindowDataset` and stores the result on disk as a .npy memory
map; `CachedWindowDataset` serves it back with the targets, and the model continues from there
(`SpeechEncoder.forward(front=..., valid=...)`), so training computes exactly what it computes without the cache.

Disk cost per window: frames × channels × bytes per value (bf16 when training in bf16, else float32).
wav2vec2/HuBERT/WavLM base, 10 s windows: 499 × 512 × 2 B = 0.51 MB (4.4 GB for 8,700 windows of a full
subject); Whisper-small: 500 (truncate) or 1500 (pad30) × 768 × 2 B = 0.77 / 2.3 MB. Pages are read from the
memory map as batches need them: resident memory stays at a batch.

Each cache lives in `<cache_dir>/<key hash>/`, the key covering the front end's weights, the windows' audio
and the settings, so several models or runs can share one `cache_dir` and a stale cache is never reused.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from atomic_io import reserve_space, write_json_atomic, writing
from run_utils import NPY_READ_ERRORS

META = "front_end.json"
ARRAY = "front_end.npy"
STORAGE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def front_end_key(encoder, dataset, n_blocks: int, storage: str) -> dict:
    """What the cached arrays depend on: front-end weights, window audio and positions, settings.

    Parameters
    ----------
    encoder : models.SpeechEncoder.
    dataset : training.WindowDataset (its stories' waveforms, window ends and length).
    n_blocks : transformer blocks included in the front end.
    storage : "bf16" or "fp32".
    """
    weights = weights_digest(encoder.front_end_modules(n_blocks))
    audio = hashlib.blake2b(digest_size=16)
    for story, ends in zip(dataset.stories, dataset.ends):
        audio.update(story.name.encode())
        audio.update(np.ascontiguousarray(story.wav, dtype=np.float32).tobytes())
        audio.update(np.asarray(ends, dtype=np.int64).tobytes())
    return {"model_type": encoder.model_type, "whisper_mode": encoder.whisper_mode if encoder.model_type == "whisper"
            else None, "do_normalize": encoder.do_normalize, "n_blocks": int(n_blocks), "storage": storage,
            "window_samples": int(dataset.length), "n_windows": len(dataset),
            "stories": [s.name for s in dataset.stories], "weights_blake2b": weights,
            "audio_blake2b": audio.hexdigest()}


def weights_digest(modules) -> str:
    """blake2b of the named parameters and buffers of `modules` (a list of nn.Module), as float32 bytes."""
    weights = hashlib.blake2b(digest_size=16)
    for module in modules:
        for name, t in sorted(module.state_dict().items()):
            weights.update(name.encode())
            weights.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return weights.hexdigest()


def pooled_features_path(train_set: "CachedWindowDataset", val_set: "CachedWindowDataset", encoder) -> Path:
    """Where the pooled last-layer features of `encoder` on these cached windows are kept (`--init-head ridge`).

    The file sits in the training windows' cache folder, named by a hash of the validation cache and of every
    weight of `encoder`: a brain-tuned run and its control start from the same backbone (same seed), so the second
    run reads what the first computed; any other start computes its own.
    """
    return train_set.path / f"pooled_{weights_digest([encoder])}_{val_set.path.name}.npz"


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class CachedWindowDataset(torch.utils.data.Dataset):
    """({"front": front-end output, "valid": (frames,) bool}, target) pairs, same order as the WindowDataset.

    The front end is read from the memory map and returned as float32 (values rounded to the storage dtype).
    """

    def __init__(self, path: Path, meta: dict, dataset):
        self.path, self.meta, self.dataset = Path(path), meta, dataset
        self.array = np.load(self.path / ARRAY, mmap_mode="r")
        expected = (meta["key"]["n_windows"], *meta["shape"])
        if self.array.shape != expected:
            raise ValueError(f"{self.path / ARRAY}: expected shape {expected}, found {self.array.shape}")
        self.valid = torch.zeros(meta["frames"], dtype=torch.bool)
        self.valid[:meta["valid_frames"]] = True

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def length(self) -> int:
        """Window length in samples."""
        return self.dataset.length

    def target(self, i: int) -> torch.Tensor:
        """Target of window i, (n_targets,) float32."""
        return self.dataset.target(i)

    def __getitem__(self, i: int):
        raw = torch.from_numpy(np.array(self.array[i]))
        front = raw.view(torch.bfloat16).float() if self.meta["key"]["storage"] == "bf16" else raw
        return {"front": front, "valid": self.valid}, self.target(i)


def build_front_end_cache(cache_dir: str | os.PathLike, encoder, dataset, device, precision: str,
                          batch_size: int = 16, n_blocks: int | None = None, rank: int = 0, world: int = 1,
                          quiet: bool = False) -> CachedWindowDataset:
    """Compute (or reuse) the front end of every window of `dataset` and return the cached dataset.

    Parameters
    ----------
    cache_dir : folder shared by caches (each in its own key-hash subfolder, built under an flock so that
        concurrent runs build it once). With torchrun it must be on a filesystem all ranks see: rank r computes
        windows r, r + world, ... into one memory map.
    encoder : models.SpeechEncoder whose front end is frozen; `encoder.front_blocks` is set to the blocks
        included, which the model then skips.
    dataset : training.WindowDataset.
    precision : "bf16" stores bfloat16 (what bf16 training computes the front end in), "fp32" float32.
    n_blocks : blocks to include (default: all that `encoder.cacheable_blocks()` allows).
    """
    n_blocks = encoder.cacheable_blocks() if n_blocks is None else n_blocks
    storage = "bf16" if precision == "bf16" else "fp32"
    key = front_end_key(encoder, dataset, n_blocks, storage)
    path = Path(cache_dir) / _key_hash(key)
    dist = world > 1 and torch.distributed.is_initialized()
    meta = _read_meta(path, key)
    if meta is None or dist:  # under torchrun every rank takes this path, so that they agree
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # runs sharing cache_dir (a tuned run and its control started together) build each cache once
        with _exclusive(Path(cache_dir) / f"{path.name}.lock", enabled=rank == 0):
            if dist:
                torch.distributed.barrier()
            meta = _read_meta(path, key)  # built by another run while this one waited?
            if dist:  # one decision for all ranks: rank 0's
                decision = [meta is None]
                torch.distributed.broadcast_object_list(decision, src=0)
                rebuild = decision[0]
            else:
                rebuild = meta is None
            if rebuild:
                meta = _fill(path, key, encoder, dataset, device, precision, batch_size, n_blocks, rank, world, quiet)
            elif dist:
                meta = _read_meta(path, key)
    if rank == 0 and not quiet and meta.get("reused", True):
        print(f"front-end cache: reusing {path} ({meta['bytes'] / 1e9:.2f} GB)", flush=True)
    encoder.front_blocks = n_blocks
    return CachedWindowDataset(path, meta, dataset)


def _read_meta(path: Path, key: dict) -> dict | None:
    """The metadata of a complete cache for `key` in `path`, else None (absent, interrupted, or its array damaged:
    a copy cut short is rebuilt, not read)."""
    try:
        meta = json.loads((path / META).read_text())
        if not (meta.get("complete") and meta.get("key") == key):
            return None
        shape = np.load(path / ARRAY, mmap_mode="r").shape  # raises on an array shorter than its header says
    except NPY_READ_ERRORS:
        return None
    return meta if shape == (key["n_windows"], *meta["shape"]) else None


@contextlib.contextmanager
def _exclusive(lock_path: Path, enabled: bool = True):
    """An advisory lock (flock) held for the block; released when the process dies, so a kill never wedges it."""
    if not enabled:
        yield
        return
    with open(lock_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fill(path, key, encoder, dataset, device, precision, batch_size, n_blocks, rank, world, quiet) -> dict:
    from training import autocast
    dist = world > 1 and torch.distributed.is_initialized()
    probe = torch.from_numpy(dataset.window(0))[None].to(device)
    was_training = encoder.training
    encoder.eval()
    with autocast(device, precision):
        shape = tuple(encoder.front_end(probe, n_blocks).shape[1:])
    frames = shape[0] if encoder.model_type == "whisper" else shape[1]
    np_dtype = np.int16 if key["storage"] == "bf16" else np.float32  # bf16 stored as its 16 raw bits
    partial = path / (ARRAY + ".partial")
    if rank == 0:
        shutil.rmtree(path, ignore_errors=True)
        with writing(partial, partial=partial):
            path.mkdir(parents=True)
            np.lib.format.open_memmap(partial, mode="w+", dtype=np_dtype, shape=(len(dataset), *shape)).flush()
            reserve_space(partial)  # a full disk fails here, not as a SIGBUS when a page is written hours later
    if dist:
        torch.distributed.barrier()
    array = np.load(partial, mmap_mode="r+")
    mine = np.arange(rank, len(dataset), world)
    nbytes = array.nbytes
    if rank == 0 and not quiet:
        print(f"front-end cache: {len(dataset)} windows × {shape} {key['storage']} = {nbytes / 1e9:.2f} GB "
              f"in {path}", flush=True)
    for start in tqdm(range(0, len(mine), batch_size), desc="front-end cache", leave=False, disable=quiet):
        idx = mine[start:start + batch_size]
        wav = torch.from_numpy(np.stack([dataset.window(i) for i in idx])).to(device)
        with autocast(device, precision):
            out = encoder.front_end(wav, n_blocks).to(STORAGE_DTYPES[key["storage"]]).cpu()
        array[idx] = (out.view(torch.int16) if key["storage"] == "bf16" else out).numpy()
    array.flush()
    del array
    encoder.train(was_training)
    if dist:
        torch.distributed.barrier()
    meta = {"key": key, "complete": True, "shape": list(shape), "frames": int(frames),
            "valid_frames": int(min(encoder.frame_count(dataset.length), frames)), "bytes": int(nbytes)}
    if rank == 0:
        os.replace(partial, path / ARRAY)
        write_json_atomic(path / META, meta)  # written last: its presence means the array is whole
    if dist:
        torch.distributed.barrier()
    return {**meta, "reused": False}
