"""Brain-tuning training pieces: story windows and targets, controls, losses, schedule, loops, checkpoints.

The script `brain_trainer_story.py` reads top to bottom and calls these. Shapes: windows (B, n_samples)
float32 at 16 kHz; targets (B, n_targets) float32 (z-scored responses of the selected voxels, or any
TR-aligned feature matrix).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from atomic_io import replace_dir, save_npz_atomic, write_csv_atomic, write_json_atomic, writing
from data_utils import DataError, Ds003020
from models import save_tuned
from run_utils import NPY_READ_ERRORS
from timing import TRGrid, cut_window, response_tr_indices, window_end_samples, window_samples

LOSSES = ("mse", "spatial_corr", "temporal_corr")
CONTROLS = ("story-swap", "block-shuffle")


@dataclass
class StoryData:
    """One story ready for brain-tuning: waveform, TR grid and one target row per hf5 row."""
    name: str
    wav: np.ndarray        # (n_samples,) float32, 16 kHz
    grid: TRGrid
    targets: np.ndarray    # (n_rows, n_targets) float32


def load_story_data(data: Ds003020, subjects: list[str], stories: list[str], voxels: list[np.ndarray] | None,
                    targets_from: dict[str, np.ndarray] | None = None, quiet: bool = False,
                    targets_source: str = "--targets-from file") -> list[StoryData]:
    """Waveforms, grids and targets of `stories` for one subject or several tuned together.

    Parameters
    ----------
    subjects : subject ids; every one must have responses for every story.
    voxels : per subject, the column indices of its targets (None with `targets_from`). Several subjects' responses
        are placed side by side in `subjects` order: they heard the same audio on the same TR grid, so row j of each
        is the same TR (each subject's rows are checked against the grid).
    targets_from : story -> (n_rows, F) targets instead of responses (one subject: its response rows place them).
    targets_source : where `targets_from` was read, for error messages.
    """
    if targets_from is None and len(voxels) != len(subjects):
        raise ValueError(f"one voxel selection per subject: {len(subjects)} subjects, {len(voxels)} selections")
    if targets_from is not None:  # one head for every story: the same number of target columns in each
        widths = {k: np.shape(v)[1] for k, v in targets_from.items() if np.ndim(v) == 2}
        if len(set(widths.values())) > 1:
            common = max(set(widths.values()), key=list(widths.values()).count)
            odd = {k: w for k, w in widths.items() if w != common}
            raise DataError(f"{targets_source}: every story needs the same number of target columns; most have "
                            f"{common}, but {dict(list(odd.items())[:5])}")
    out = []
    for story in tqdm(stories, desc="loading stories", leave=False, disable=quiet):
        grid = data.tr_grid(story)
        if targets_from is None:
            parts = [data.load_responses(s, story, voxels=v) for s, v in zip(subjects, voxels)]
            targets = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        else:  # only the response rows are needed: no voxel is read (95k columns per story on real data)
            n_rows = data.n_response_rows(subjects[0], story)
            if story not in targets_from:
                raise DataError(f"{targets_source}: no entry for story '{story}' (has "
                                f"{sorted(targets_from)[:6]}...)")
            targets = np.asarray(targets_from[story], dtype=np.float32)
            if targets.ndim != 2 or targets.shape[0] != n_rows:
                raise DataError(f"{targets_source}: '{story}' expected ({n_rows}, F) rows aligned with the "
                                f"responses, found shape {targets.shape}")
            if not np.isfinite(targets).all():  # the loss would be NaN from the first batch holding one
                bad = ~np.isfinite(targets)
                raise DataError(f"{targets_source}: '{story}' holds {int(bad.sum())} NaN or inf values (rows "
                                f"{np.flatnonzero(bad.any(1))[:5].tolist()}...); expected finite targets")
        out.append(StoryData(story, data.audio(story), grid, targets))
    return out


def apply_target_control(stories: list[StoryData], control: str, seed: int, block_trs: int = 10,
                         min_block_distance: int = 2) -> list[StoryData]:
    """Decouple targets from the audio (SPEC-methods.md §7).

    story-swap: each story takes the responses of another story (cyclic pairing, cropped or wrapped to length).
    block-shuffle: TR blocks of `block_trs` rows are permuted so that no block lands within
    `min_block_distance` blocks of its own position.
    """
    rng = np.random.default_rng(seed)
    if control == "story-swap":
        if len(stories) < 2:
            raise DataError("target control 'story-swap' needs at least 2 stories in a split")
        order = np.roll(np.arange(len(stories)), 1 + rng.integers(len(stories) - 1))
        out = []
        for s, j in zip(stories, order):
            other = stories[j].targets
            idx = np.arange(len(s.targets)) % len(other)
            out.append(StoryData(s.name, s.wav, s.grid, other[idx]))
        return out
    if control == "block-shuffle":
        out = []
        for s in stories:
            n_blocks = math.ceil(len(s.targets) / block_trs)
            perm = _distant_permutation(n_blocks, min_block_distance, rng)
            rows = np.concatenate([np.arange(b * block_trs, min((b + 1) * block_trs, len(s.targets))) for b in perm])
            out.append(StoryData(s.name, s.wav, s.grid, s.targets[rows]))
        return out
    raise ValueError(f"unknown target control {control!r} (expected one of {CONTROLS})")


def _distant_permutation(n: int, min_distance: int, rng) -> np.ndarray:
    """A permutation p of range(n) with |p[i] - i| >= min_distance where possible (else a half rotation)."""
    for _ in range(2000):
        p = rng.permutation(n)
        if np.all(np.abs(p - np.arange(n)) >= min_distance):
            return p
    return np.roll(np.arange(n), n // 2)


class WindowDataset(torch.utils.data.Dataset):
    """(window, target) pairs: the 5-TR audio window ending at the end of TR j+10, and hf5 row j's target.

    Items are ({"wav": (n_samples,) float32}, (n_targets,) float32): the model is called as model(**inputs),
    which also takes the front-end cache's {"front", "valid"} inputs. Windows are cut on access from the story
    waveforms, never materialised all at once.
    """

    def __init__(self, stories: list[StoryData], n_chunks: int = 5, sample_rate: int = 16000):
        self.stories = stories
        self.index = [(si, j) for si, s in enumerate(stories) for j in range(len(s.targets))]
        tr = stories[0].grid.tr
        self.length = window_samples(tr, n_chunks, sample_rate)
        self.ends = [window_end_samples(s.grid, response_tr_indices(len(s.targets)), sample_rate) for s in stories]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return {"wav": torch.from_numpy(self.window(i))}, self.target(i)

    def window(self, i: int) -> np.ndarray:
        """Audio window i, (n_samples,) float32."""
        si, j = self.index[i]
        return cut_window(self.stories[si].wav, int(self.ends[si][j]), self.length)

    def target(self, i: int) -> torch.Tensor:
        """Target of window i, (n_targets,) float32."""
        si, j = self.index[i]
        return torch.from_numpy(self.stories[si].targets[j])


# ----------------------------------------------------------------------------------------------- losses
def _pearson(pred: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    p = pred - pred.mean(dim=dim, keepdim=True)
    t = target - target.mean(dim=dim, keepdim=True)
    return (p * t).sum(dim) / (p.norm(dim=dim) * t.norm(dim=dim) + 1e-8)


def brain_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Loss between predictions and targets (B, V).

    mse: mean squared error. spatial_corr: −mean over samples of the correlation across voxels (BrainWavLM).
    temporal_corr: −mean over voxels of the correlation across the samples of the batch.
    """
    pred, target = pred.float(), target.float()
    if kind == "mse":
        return nn.functional.mse_loss(pred, target)
    if kind == "spatial_corr":
        return -_pearson(pred, target, dim=1).mean()
    if kind == "temporal_corr":
        return -_pearson(pred, target, dim=0).mean()
    raise ValueError(f"unknown loss {kind!r} (expected one of {LOSSES})")


def warmup_linear_decay(total_steps: int, warmup_fraction: float = 0.1):
    """LR multiplier: linear warm-up over `warmup_fraction` of the steps, then linear decay to 0."""
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return factor


# ----------------------------------------------------------------------------------------------- loops
def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked (CUDA, or a CPU: fast where it has native bf16, e.g. AVX512-BF16/AMX), else off."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class TrainingDiverged(RuntimeError):
    """A gradient became NaN or inf: the optimizer step that would write it into the weights was not taken."""


def train_one_epoch(model, loader, optimizer, scheduler, loss_kind: str, accum_steps: int, device, precision: str,
                    desc: str = "train", stop_after_steps: int | None = None, step_offset: int = 0,
                    disable_progress: bool = False) -> tuple[float, int]:
    """One pass over `loader` with gradient accumulation; returns (mean loss, optimizer steps taken).

    Each optimizer step averages the losses of its micro-batches (`accum_steps` of them; the epoch's last step
    may have fewer and averages over those, not over `accum_steps`). Under DDP the last micro-batch of every step,
    the epoch's last one included, synchronises the gradients. `stop_after_steps` (testing crash recovery)
    raises SystemExit(75) once that many optimizer steps of the run (counting `step_offset` earlier ones) are
    done, without writing anything. Raises TrainingDiverged before an optimizer step whose gradient is not finite
    (bf16 overflow, a learning rate far too high), so the weights and the checkpoints keep their last finite values.
    """
    model.train()
    total, count, steps = 0.0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    n_batches = len(loader)
    for micro, (inputs, target) in enumerate(tqdm(loader, desc=desc, leave=False, disable=disable_progress)):
        inputs, target = _to(inputs, device), target.to(device, non_blocking=True)
        group_start = micro - micro % accum_steps
        group_size = min(accum_steps, n_batches - group_start)
        last_micro = micro == group_start + group_size - 1
        sync = model.no_sync() if hasattr(model, "no_sync") and not last_micro else _null()
        with sync, autocast(device, precision):
            loss = brain_loss(model(**inputs), target, loss_kind)
        (loss / group_size).backward()
        if micro == group_start:  # the losses of this optimizer step's micro-batches, for a divergence message
            step_losses = []
        step_losses.append(loss.item())
        total += step_losses[-1] * len(target)
        count += len(target)
        if last_micro:
            # after DDP's all-reduce every replica holds the same gradient, so all of them stop here together
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
                losses = ", ".join(f"{v:.4g}" for v in step_losses)
                raise TrainingDiverged(f"{desc}: the gradient of optimizer step {step_offset + steps + 1} is not "
                                       f"finite (its micro-batches' losses {losses})")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if stop_after_steps is not None and step_offset + steps >= stop_after_steps:
                raise SystemExit(75)
    return total / max(count, 1), steps


def _to(inputs: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@torch.no_grad()
def evaluate(model, loader, loss_kind: str, device, precision: str, disable_progress: bool = False) -> dict:
    """Validation loss (sample-weighted) and mean voxelwise correlation over all validation rows."""
    model.eval()
    preds, targets = [], []
    for inputs, target in tqdm(loader, desc="validate", leave=False, disable=disable_progress):
        inputs, target = _to(inputs, device), target.to(device)
        with autocast(device, precision):
            preds.append(model(**inputs).float().cpu())  # on the CPU batch by batch: GPU memory stays one batch
        targets.append(target.float().cpu())
    return validation_metrics(preds, targets, loss_kind)


def validation_metrics(preds: list[torch.Tensor], targets: list[torch.Tensor], loss_kind: str) -> dict:
    """Sample-weighted mean of the per-batch losses and mean voxelwise correlation over all rows.

    preds, targets : per validation batch, (B, V) CPU predictions and targets (batch-wise as the loss sees them).
    """
    from eval_utils import columnwise_correlation
    total = sum(brain_loss(p, t, loss_kind).item() * len(t) for p, t in zip(preds, targets))
    count = sum(len(t) for t in targets)
    r = columnwise_correlation(torch.cat(preds).float().numpy(), torch.cat(targets).float().numpy())
    return {"val_loss": total / max(count, 1), "val_corr": float(np.mean(r))}


def epoch_loader(train_set, epoch: int, seed: int, micro: int, num_workers: int, device, rank: int, world: int):
    """The training windows of one epoch in an order set by (seed, epoch) alone, this process's share under DDP."""
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(train_set, generator=torch.Generator().manual_seed(seed + epoch))
    return torch.utils.data.DataLoader(train_set, batch_size=micro, sampler=sampler, num_workers=num_workers,
                                       pin_memory=device.type == "cuda", drop_last=False)


# ----------------------------------------------------------------------------------------------- checkpoints
def save_training_state(path_dir: Path, model, optimizer, scheduler, state: dict) -> None:
    """Write everything needed to resume into `path_dir` (weights as safetensors, the rest as a .pt)."""
    from safetensors.torch import save_file

    path_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_dedupe_shared(weights), str(path_dir / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path_dir / "optim.pt")
    write_json_atomic(path_dir / "state.json", state)


def _dedupe_shared(weights: dict) -> dict:
    # safetensors refuses tensors sharing memory (tied weights): store clones
    seen, out = set(), {}
    for k, v in weights.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def load_training_state(path_dir: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer and scheduler from `path_dir`; returns the saved state dict.

    The trainer swaps whole checkpoint folders into place, so a kill never leaves one half-written; a file damaged
    afterwards (a partial copy between machines) raises DataError naming it, not a library's traceback."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = path_dir / "model.safetensors"
    try:
        model.load_state_dict(load_file(str(path)))
        path = path_dir / "optim.pt"
        opt = torch.load(path, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        path = path_dir / "state.json"
        return json.loads(path.read_text())
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        raise DataError(f"{path}: checkpoint unreadable ({type(err).__name__}: {str(err).splitlines()[0]}); restore "
                        f"it, or start the run again with --overwrite") from err


def save_epoch(out_dir: Path, model, extractor, optimizer, scheduler, state: dict, best_record: dict | None) -> None:
    """After an epoch: best/ (when `best_record`, its brain_tuning.json, is given), last/ and metrics.csv, each
    written beside and then swapped in, so that a kill leaves the previous epoch's whole."""
    if best_record is not None:
        tmp = out_dir / "best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with writing(tmp, partial=tmp):  # a full disk: WriteError, the partial folder removed, best/ as it was
            save_tuned(model, extractor, tmp)
            write_json_atomic(tmp / "brain_tuning.json", best_record)
        replace_dir(tmp, out_dir / "best")
    tmp = out_dir / "last.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(tmp, partial=tmp):
        save_training_state(tmp, model, optimizer, scheduler, state)
    replace_dir(tmp, out_dir / "last")
    write_csv_atomic(out_dir / "metrics.csv", state["metrics"])


def distributed_setup() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; initialises the process group if > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":  # NCCL collectives (barrier, broadcast_object_list) run on the current GPU: our own
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend=backend)
    return rank, world, local


def check_replicas_in_sync(model: nn.Module, epoch: int) -> None:
    """Under DDP, raise if the processes' parameters differ (one checksum per tensor, two all-reduces).

    DDP keeps replicas identical only if every optimizer step used all-reduced gradients; a step on local
    gradients would let them drift apart silently while rank 0 alone saves the model.
    """
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    high, low = sums.clone(), sums.clone()
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    if not torch.equal(high, low):
        n = int((high != low).sum())
        raise RuntimeError(f"DDP replicas differ after epoch {epoch}: {n} of {len(sums)} parameter tensors disagree "
                           f"across processes")


def epoch_timer() -> float:
    """Seconds on a monotonic clock (differences give an epoch's duration)."""
    return time.perf_counter()


# ----------------------------------------------------------------------------------------------- head init
@torch.no_grad()
def pooled_features(model, loader, device, precision: str, disable_progress: bool = False):
    """Pooled last-layer features (N, hidden) and targets (N, n_targets) of every window of `loader`."""
    model.eval()
    feats, targets = [], []
    for inputs, target in tqdm(loader, desc="pooled features", leave=False, disable=disable_progress):
        with autocast(device, precision):
            feats.append(model.pool(**_to(inputs, device)).float().cpu().numpy())
        targets.append(target.numpy())
    return np.concatenate(feats).astype(np.float64), np.concatenate(targets).astype(np.float64)


def ridge_head_weights(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       alphas=np.logspace(-3, 5, 17)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge readout (with intercept) per target, its penalty chosen on the validation windows (MSE).

    x : (N, H) pooled features; y : (N, V) targets. Penalty is alpha·trace(XᵀX)/H (scale-free grid).
    Returns W (H, V), b (V,), and the chosen alpha per target (V,).
    """
    mx, my = x_train.mean(0), y_train.mean(0)
    xc, yc = x_train - mx, y_train - my
    s2, u = np.linalg.eigh(xc.T @ xc)
    s2 = np.clip(s2, 0, None)
    scale = s2.sum() / len(s2)
    uxy = u.T @ (xc.T @ yc)
    best_mse = np.full(y_train.shape[1], np.inf)
    best_w = np.zeros((x_train.shape[1], y_train.shape[1]))
    best_a = np.zeros(y_train.shape[1])
    for a in alphas:
        w = u @ (uxy / (s2 + a * scale)[:, None])
        mse = (((x_val - mx) @ w + my - y_val) ** 2).mean(0)
        better = mse < best_mse
        best_mse[better], best_w[:, better], best_a[better] = mse[better], w[:, better], a
    return best_w, my - mx @ best_w, best_a


def init_head_ridge(model, train_loader, val_loader, device, precision: str, disable_progress: bool = False,
                    feature_file: Path | None = None, loss_kind: str = "mse") -> dict:
    """Set a full-rank voxel head to the ridge readout of the current backbone's pooled features.

    Starts tuning from the best linear readout, so the backbone's gradients carry signal from the first step.
    Returns what was done and "initial_val", the new head's validation metrics under `loss_kind` (as `evaluate`
    gives them, in `val_loader`'s batches) from the features at hand: epoch 0 without another backbone pass.
    feature_file : optional .npz of the pooled features (train, val) of this very backbone on these windows
        (front_end_cache.pooled_features_path): read when it exists, else written (atomically).
    """
    if model.head.rank:
        raise ValueError("--init-head ridge needs a full-rank head (no --head-rank)")
    loaders = (train_loader, val_loader)
    stored = _load_pooled(feature_file, [len(l.dataset) for l in loaders]) if feature_file else None
    if stored is None:
        (x_tr, y_tr), (x_va, y_va) = (pooled_features(model, l, device, precision, disable_progress) for l in loaders)
        if feature_file:
            save_npz_atomic(feature_file, train=x_tr, val=x_va)
    else:
        (x_tr, x_va), (y_tr, y_va) = stored, (dataset_targets(l.dataset) for l in loaders)
    w, b, alphas = ridge_head_weights(x_tr, y_tr, x_va, y_va)
    linear = model.head.net
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w.T).to(linear.weight))
        linear.bias.copy_(torch.from_numpy(b).to(linear.bias))
        # the epoch-0 validation of this head from the features at hand, in the loader's batches
        bs = val_loader.batch_size
        with autocast(device, precision):
            preds = [model.head(torch.from_numpy(x_va[i:i + bs]).to(linear.weight)) for i in range(0, len(x_va), bs)]
        targets = [torch.from_numpy(y_va[i:i + bs]).float() for i in range(0, len(y_va), bs)]
    return {"head_init": "ridge", "median_alpha": float(np.median(alphas)),
            "pooled_features": "read from " + str(feature_file) if stored is not None else "computed",
            "initial_val": validation_metrics([p.float().cpu() for p in preds], targets, loss_kind)}


def _load_pooled(path: Path, lengths: list[int]):
    """(train, val) features from `path`, or None when it is missing or holds other windows."""
    try:
        with np.load(path) as f:
            x = (f["train"], f["val"])
    except NPY_READ_ERRORS:  # missing or damaged: computed again
        return None
    return x if [len(a) for a in x] == lengths else None


def dataset_targets(dataset) -> np.ndarray:
    """(N, n_targets) float64: the targets of every item of a (cached) window dataset, in order."""
    return np.stack([np.asarray(dataset.target(i)) for i in range(len(dataset))]).astype(np.float64)
