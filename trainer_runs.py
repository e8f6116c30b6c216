"""The brain-tuning trainer's run folder: telling its runs from other folders, preparing --out-dir, checking --resume.

A run folder holds config.json (the run's record: settings, command, versions), metrics.csv, best/ and last/.
`prepare_out_dir` refuses to write into anything else; a --resume continues only the run its folder records, on
the same settings (`RUN_DEFINING`), targets (`resumed_targets_problem`) and data (`resumed_data_problem`).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from run_utils import (EXIT_DATA, EXIT_USAGE, NPY_READ_ERRORS, RUN_LOCK, Stop, check_replaceable, read_result_json,
                       timestamp)

TRAINER = "brain_trainer_story.py"

# Settings that define a run: a resumed run must agree on all of them.
# Not --data-dir: a cluster job often copies the dataset to node-local scratch under a new path each time, so a
# resumed run reads it wherever it is and checks what it reads instead (`resumed_data_problem`, target voxels).
RUN_DEFINING = ("subject", "model_name", "revision", "nc_threshold", "roi", "hemisphere", "loss",
                "target_control", "targets_from", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
                "head_rank", "batch_size", "lr", "head_lr", "seed", "tr", "trfiles", "whisper_mode", "train_stories",
                "val_stories", "split", "num_epochs", "warmup_fraction", "freeze_layers", "init_head")


def is_trainer_run(folder: Path) -> bool:
    """Whether `folder/config.json` is this script's run record (an HF model folder also has a config.json)."""
    try:
        read_result_json(folder, "config.json", "brain-tuning run", ("args", "command", "started", "versions"),
                         objects=("args", "versions"))
    except (OSError, ValueError):
        return False
    return True


def foreign_record_problem(folder: Path) -> str | None:
    """Why `folder/config.json`, readable, is another program's (a model's config, another script's run record)
    rather than a brain-tuning run's, else None (a damaged file is left to read_result_json to name)."""
    try:
        record = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or is_trainer_run(folder):
        return None
    if "model_type" in record:
        what = f"a model folder (its config.json is a {record['model_type']} model's)"
    else:  # this script's record, damaged, is left to read_result_json to name
        others = {p.name for p in Path(__file__).resolve().parent.glob("*.py")} - {TRAINER}
        command = record.get("command") if isinstance(record.get("command"), str) else ""
        scripts = [s for s in re.findall(r"[\w-]+\.py", command) if s in others]
        if not scripts:
            return None
        what = f"another script's results (its config.json records a run of {scripts[0]})"
    return f"{folder} is {what}, not a brain-tuning run: choose another --out-dir"


def resumed_targets_problem(out_dir: Path, old_run: dict, subjects: list[str], voxels: list[np.ndarray] | None,
                            vox_info: dict) -> str | None:
    """Why the targets now are not those of the run being resumed, else None: the voxels selected now against its
    target_voxels*.npy (other noise-ceiling or ROI files, whose paths are not among the run's settings, would hand the
    head's columns to other voxels), or the --targets-from file's content against the run's record of it."""
    if voxels is None:
        saved = old_run.get("args", {}).get("resolved", {}).get("voxels", {}).get("targets_sha256")
        if saved is not None and saved != vox_info["targets_sha256"]:
            return (f"{vox_info['targets_from']}: other content than the run was tuned on (sha256 {saved[:12]}... in "
                    f"its config.json); resume with the same targets, or start again with --overwrite")
        return None
    names = ["target_voxels.npy"] if len(subjects) == 1 else [f"target_voxels_{s}.npy" for s in subjects]
    for name, now in zip(names, voxels):
        path = out_dir / name
        try:
            saved = np.load(path, allow_pickle=False)
        except NPY_READ_ERRORS as err:
            return f"{path}: unreadable ({err}), so the run's target voxels cannot be checked; restore it"
        if not np.array_equal(saved, now):
            return (f"{path}: the run was tuned on {len(saved)} voxels, the noise-ceiling and ROI files now select "
                    f"{len(now)}{' (other ones)' if len(saved) == len(now) else ''}; resume with the files the run "
                    f"started with, or start again with --overwrite")
    return None


def prepare_out_dir(args, config: dict, out_dir: Path, world: int, is_main: bool) -> dict:
    """Check --out-dir against --resume/--overwrite; empty it for --overwrite. Returns the saved run's config.json
    when --resume continues it ({} otherwise). Refuses (Stop) another run's folder, a damaged record or a folder
    that is not a trainer run."""
    old_cfg_path = out_dir / "config.json"
    old_run = {}
    if problem := foreign_record_problem(out_dir):  # never resumed, replaced or written into
        raise Stop(problem, EXIT_USAGE)
    if old_cfg_path.is_file() and not args.overwrite:
        try:
            old_run = read_result_json(out_dir, "config.json", "brain-tuning run", ("args",), objects=("args",))
        except ValueError as err:  # damaged: which run it holds cannot be told, so nothing in it is touched
            raise Stop(f"{err}: no readable run record, so {out_dir} is left as it is (restore the file if it was "
                       f"a run, or choose another --out-dir)", EXIT_DATA) from err
        old = old_run["args"]
        old = {"revision": "main", **old}  # a run recorded before --revision existed loaded main
        diff = {k: (old.get(k), config.get(k)) for k in RUN_DEFINING if old.get(k) != config.get(k)}
        if not args.resume:
            raise Stop(f"{out_dir} already holds a run; pass --resume to continue it or --overwrite to replace it",
                       EXIT_USAGE)
        if diff:
            why = (" (its learning-rate warm-up and decay span the saved --num-epochs, so a run cannot be lengthened)"
                   if "num_epochs" in diff else "")
            raise Stop(f"{old_cfg_path} describes a different run (setting: (saved, now)): {diff}; --resume continues "
                       f"a run with the settings it started with{why}: for other settings choose another --out-dir, or "
                       f"--overwrite to replace it", EXIT_USAGE)
    if args.overwrite and out_dir.exists():
        try:  # only a trainer run (or an empty folder) is ever deleted, never a mistyped --out-dir
            check_replaceable(out_dir, ("front_end_cache",), "brain-tuning run (a run's config.json)",
                              is_output=is_trainer_run)
        except FileExistsError as err:
            raise Stop(f"--overwrite: {err}", EXIT_USAGE) from err
        if world > 1:  # every rank has checked before rank 0 deletes
            torch.distributed.barrier()
        if is_main:  # everything but the claim this run holds on it
            for path in out_dir.iterdir():
                if path.name == RUN_LOCK:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    return old_run


def moved(then: str | None, now: str) -> bool:
    """Whether --data-dir names another folder than the run's record (its last start's) does (the same folder written
    otherwise, e.g. relative and absolute, is not a move)."""
    return then is None or Path(then).expanduser().resolve() != Path(now).expanduser().resolve()


def resumed_data_problem(old_run: dict, config: dict) -> str | None:
    """Why the data read now are not those of the run being resumed, else None: another story split (a story the
    subjects lack now or have now), other window counts, or other TR grids than its config.json records (records
    written before these were kept are not checked). A moved --data-dir is fine when these agree."""
    old = old_run.get("args", {})
    where = f"--data-dir {config['data_dir']}" + (f" (the run's record names {old['data_dir']})"
                                                  if moved(old.get("data_dir"), config["data_dir"]) else "")
    old_resolved = old.get("resolved") if isinstance(old.get("resolved"), dict) else {}
    checks = [("story split", old.get("stories"), config["stories"])]
    checks += [(what, old_resolved.get(key), config["resolved"][key])
               for what, key in (("training windows", "train_windows"), ("validation windows", "val_windows"),
                                 ("TR grids", "timing"))]
    for what, then, now in checks:
        if then is not None and then != now:
            return (f"{where}: other {what} than the run was tuned on ({then} then, {now} now): resume on the "
                    f"dataset it started with, or start again with --overwrite")
    return None


def resume_record(run_config: dict, config: dict, old_run: dict, state: dict) -> None:
    """Keep the first start's record in a resumed run's config (`run_config`, in place) and add this resumption."""
    # the weights resume from last/, so the base model is the one the first start loaded, whatever the hub's now
    first = old_run["args"].get("resolved")
    if isinstance(first, dict) and "model_revision" in first:
        config["resolved"]["model_revision"] = first["model_revision"]
    now = {"command": run_config["command"], "versions": run_config["versions"], "data_dir": config["data_dir"]}
    run_config.update({k: old_run[k] for k in ("command", "started", "versions", "head_init") if k in old_run})
    run_config["resumed"] = old_run.get("resumed", []) + [{"at": timestamp(), "after_epoch": state["epoch"], **now}]
