"""Brain-tune a speech model on one subject's fMRI responses to the Moth Radio Hour stories (or several subjects').

    python brain_trainer_story.py --data-dir /path/to/ds003020 --subject UTS03 \
        --model-name facebook/wav2vec2-base --out-dir runs/w2v_UTS03

Defaults follow Moussa et al. (ICLR 2025): voxels with NC > 0.4, mean-pooled last layer -> linear head, MSE,
Adam lr 5e-5 (backbone) / 1e-4 (head), 10% warm-up then linear decay, batch 128, up to 30 epochs, early
stopping on the validation stories. BrainWavLM options: --lora-rank 4 --head-rank 100 --loss spatial_corr.
Several subjects (`--subject UTS01 UTS02 UTS03`): one backbone tuned on all of them, the head's columns each
subject's voxels side by side (they heard the same audio), on the stories every one of them has; the loss weighs
every voxel alike, so a subject with more voxels above the NC threshold weighs more.
Multi-GPU: torchrun --nproc_per_node=N brain_trainer_story.py ... (DDP; only rank 0 writes).
Outputs in --out-dir: config.json, metrics.csv, loss_curve.png, target_voxels.npy (several subjects:
target_voxels_<SUBJ>.npy), best/ (HF model dir + voxel head), last/.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import data_utils as du
import models
import training
import voxel_selection as vs
from atomic_io import recover_dir, save_npy_atomic, write_json_atomic
from file_readers import npy_read_problem
from run_utils import (EXIT_DATA, EXIT_DIVERGED, EXIT_USAGE, NPY_READ_ERRORS, HelpFormatter, Stop, command_line,
                       exit_code, file_sha256, first_few, fraction, load_npz, nonnegative_float, nonnegative_int,
                       package_versions, positive_float, positive_int, read_result_json, resolve_device,
                       resolve_precision, revision_problem, run_claimed, set_seed, timestamp, writable_dir_problem)
from trainer_runs import moved, prepare_out_dir, resume_record, resumed_data_problem, resumed_targets_problem

LORA_DEFAULTS = {"lora_alpha": 4.0, "lora_dropout": 0.1}  # BrainWavLM's LoRA settings


def teacher_record(targets_file: str, timing: dict) -> dict:
    """How make_teacher_targets.py made `targets_file` (its `<file>.json`), for this run's config; {} if absent.

    Raises DataError when the targets were placed on other TR grids than this run's (`Ds003020.timing_record`):
    another repetition time, or trfiles given to one and not the other (or other trfiles). The rows would still
    count right, but drift against the audio (0.0045 s per TR: ~2 s by TR 400).
    """
    path = Path(targets_file)
    try:
        record = read_result_json(path.parent, path.name + ".json", "make_teacher_targets.py", ("resolved", "command"))
    except FileNotFoundError:
        return {}  # targets made some other way: the path is all there is to record
    except ValueError as err:  # damaged: what the targets were made on cannot be checked
        raise du.DataError(f"{err}; so the TR grids {targets_file} was made on cannot be checked against this "
                           f"run's: restore it, or remove it to use the targets unchecked") from err
    if not isinstance(record["resolved"], dict):
        raise du.DataError(f"{path}.json: expected 'resolved' to be the JSON object make_teacher_targets.py writes, "
                           f"found {json.dumps(record['resolved'])[:100]}; restore it, or remove it to use the "
                           f"targets unchecked")
    tr = timing["tr"]
    made_with = record["resolved"].get("tr")
    if made_with is not None and abs(made_with - tr) > 1e-9:
        raise du.DataError(f"{targets_file}: made on TR grids of --tr {made_with} s (its {path.name}.json), but this "
                           f"run uses --tr {tr} s; remake the targets with --tr {tr} or pass --tr {made_with}")
    made = record["resolved"].get("timing", {})  # older records: simulated grids

    def grids(t: dict) -> str:
        return t.get("trfiles") or "TR grids simulated from respdict"
    if made.get("trfiles_sha256") != timing.get("trfiles_sha256"):
        raise du.DataError(f"{targets_file}: made with {grids(made)} (its {path.name}.json), but this run uses "
                           f"{grids(timing)}; give both the same --trfiles")
    return {"teacher": record["resolved"].get("teacher"), "teacher_command": record["command"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", required=True, help="ds003020 root (holds derivative/ and stimuli/)")
    g.add_argument("--subject", required=True, nargs="+", type=du.subject_arg,
                   help="UTS03 or 3; several: one model tuned on all of them (the voxel head's columns are each "
                        "subject's voxels side by side)")
    g.add_argument("--split", default="paper", choices=["paper", "all"], help="story split preset")
    g.add_argument("--train-stories", nargs="+", help="explicit training stories (overrides the preset)")
    g.add_argument("--val-stories", nargs="+", help="explicit validation stories")
    du.add_timing_arguments(g)
    g.add_argument("--nc-threshold", type=fraction, default=vs.NC_THRESHOLD, help="tune on voxels with NC above this")
    g.add_argument("--nc-dir", default=str(vs.DEFAULT_NC_DIR), help="folder of <SUBJ>.npy noise ceilings")
    g.add_argument("--nc-file", nargs="+", help="explicit noise-ceiling .npy (overrides --nc-dir); one per --subject")
    g.add_argument("--roi-file", nargs="+",
                   help="JSON {roi: [voxel indices]} (needed for --roi / --hemisphere); one per --subject")
    g.add_argument("--roi", help="restrict targets to this ROI of --roi-file (intersected with the NC mask)")
    g.add_argument("--hemisphere", choices=["left", "right"], help="restrict to <side>_hemisphere of --roi-file")
    g.add_argument("--target-control", choices=training.CONTROLS, help="decoupled-target control run")
    g.add_argument("--targets-from", help=".npz story -> (hf5 rows, F) TR-aligned targets (teacher-tuned control)")
    g = p.add_argument_group("model")
    g.add_argument("--model-name", required=True, help="hub id or local dir (wav2vec2, hubert, wavlm, data2vec, whisper)")
    g.add_argument("--revision", default="main", help="hub branch, tag or commit of a --model-name hub id")
    g.add_argument("--whisper-mode", default="pad30", choices=models.WHISPER_MODES,
                   help="pad30 = paper (pad to 30 s, pool valid frames); truncate = positions cut to the window")
    g.add_argument("--head-rank", type=positive_int, help="low-rank readout (BrainWavLM: 100); default full rank")
    g.add_argument("--lora-rank", type=positive_int,
                   help="train LoRA adapters of this rank instead of the full transformer")
    g.add_argument("--lora-alpha", type=positive_float, default=LORA_DEFAULTS["lora_alpha"],
                   help="LoRA scaling numerator (scale = alpha / rank)")
    g.add_argument("--lora-dropout", type=fraction, default=LORA_DEFAULTS["lora_dropout"],
                   help="dropout on the LoRA input")
    g.add_argument("--lora-targets", nargs="+", help="module names to adapt (default per family)")
    g.add_argument("--freeze-layers", type=nonnegative_int, default=0,
                   help="also freeze the bottom N transformer layers (tune only the layers above)")
    g.add_argument("--init-head", default="random", choices=["random", "ridge"],
                   help="ridge = start from the ridge readout of the pretrained pooled features (alpha per voxel "
                        "chosen on the validation windows)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--loss", default="mse", choices=training.LOSSES,
                   help="mse (paper 1); spatial_corr = minus the correlation across voxels per TR (BrainWavLM); "
                        "temporal_corr = minus each voxel's correlation over the batch's TRs")
    g.add_argument("--lr", type=nonnegative_float, default=5e-5,
                   help="backbone learning rate (with --lora-rank: the adapters'; 0: left as it is)")
    g.add_argument("--head-lr", type=nonnegative_float, default=1e-4, help="voxel-head learning rate")
    g.add_argument("--batch-size", type=positive_int, default=128,
                   help="samples per optimizer step (all GPUs together)")
    g.add_argument("--micro-batch-size", type=positive_int, help="samples per forward pass (gradient accumulation)")
    g.add_argument("--num-epochs", type=positive_int, default=30, help="most epochs (early stopping may end sooner)")
    g.add_argument("--patience", type=positive_int, default=3,
                   help="epochs without validation improvement before stopping")
    g.add_argument("--warmup-fraction", type=fraction, default=0.1, help="share of the steps with linear LR warm-up")
    g.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of initialisation, order, dropout and controls")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    g.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto = bf16 on CUDA")
    g.add_argument("--num-workers", type=nonnegative_int, default=0, help="DataLoader worker processes")
    g.add_argument("--cache-front-end", action="store_true",
                   help="compute the frozen front end (conv encoder; Whisper: + frozen dropout-free blocks) once per "
                        "window and reuse it every epoch; same results, disk ~0.5 MB/window bf16 (README)")
    g.add_argument("--front-end-cache-dir",
                   help="where the cache lives (shareable between runs; kept); default <out-dir>/front_end_cache, "
                        "removed when the run finishes")
    g = p.add_argument_group("run")
    g.add_argument("--out-dir", required=True, help="run folder: config.json, metrics.csv, best/ (the tuned model), "
                                                     "last/ (for --resume)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out-dir from last/")
    g.add_argument("--overwrite", action="store_true", help="replace a different run in --out-dir")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (batch logs)")
    g.add_argument("--stop-after-steps", type=positive_int, help=argparse.SUPPRESS)  # tests: simulate a kill
    args = p.parse_args(argv)
    for name in ("subject", "nc_file", "roi_file"):  # one value: recorded as before, a string
        value = getattr(args, name)
        if value is not None and len(value) == 1:
            setattr(args, name, value[0])
    return args


def subject_list(args) -> list[str]:
    """The --subject ids, canonical (UTS03), in the order given."""
    return [du.subject_id(s) for s in ([args.subject] if isinstance(args.subject, str) else args.subject)]


def per_subject(value, n_subjects: int) -> list:
    """A per-subject flag's value as a list of `n_subjects` (None: None for each)."""
    if value is None:
        return [None] * n_subjects
    return [value] if isinstance(value, str) else list(value)


def flag_problem(args) -> str | None:
    """A flag that cannot apply with the others (it would be silently ignored or fail late), else None."""
    if args.init_head == "ridge" and args.head_rank:
        return "--init-head ridge needs a full-rank head (no --head-rank)"
    if args.targets_from and (args.roi or args.hemisphere or args.nc_file):
        return "--targets-from replaces the fMRI targets, so --roi/--hemisphere/--nc-file (which choose voxels) do not apply"
    if (args.roi or args.hemisphere) and not args.roi_file:
        return "--roi/--hemisphere need --roi-file (JSON {roi: [voxel indices]}, one per --subject)"
    subjects = subject_list(args)
    if len(set(subjects)) < len(subjects):
        return f"--subject names a subject twice: {subjects}"
    if args.targets_from and len(subjects) > 1:
        return "--targets-from replaces the fMRI targets: give one --subject (its response rows place the targets)"
    for flag, value in (("--nc-file", args.nc_file), ("--roi-file", args.roi_file)):
        if value is not None and len(per_subject(value, len(subjects))) != len(subjects):
            return (f"{flag}: one file per --subject, in its order: {len(subjects)} subjects, "
                    f"{len(per_subject(value, len(subjects)))} files")
    if problem := vs.nc_dir_problem(args.nc_dir, "--nc-file"):
        return problem
    if args.split != "paper" and args.train_stories:  # the list would override the preset without a word
        return f"--split {args.split} chooses the training stories and --train-stories names them: give one of the two"
    if args.lora_targets and not args.lora_rank:
        return "--lora-targets chooses the modules of --lora-rank adapters; add --lora-rank"
    # their defaults are values (kept so that earlier runs' records resume): given only where they differ
    lora_settings = [f"--{d.replace('_', '-')}" for d, default in LORA_DEFAULTS.items() if getattr(args, d) != default]
    if lora_settings and not args.lora_rank:
        return f"{' and '.join(lora_settings)} given without --lora-rank (settings of its LoRA adapters); add --lora-rank"
    if args.front_end_cache_dir and not args.cache_front_end:
        return "--front-end-cache-dir is where --cache-front-end keeps its cache; add --cache-front-end"
    return revision_problem([args.model_name], args.revision)


def select_voxels(args, data: du.Ds003020, subject: str, nc_file: str | None = None,
                  roi_file: str | None = None) -> tuple[np.ndarray, dict]:
    """Target voxel indices of `subject`: NC > threshold, intersected with --roi / --hemisphere; plus a description.

    nc_file, roi_file : this subject's files (of --nc-file / --roi-file).
    """
    n_vox = data.n_voxels(subject)
    nc = vs.load_noise_ceiling(subject, n_vox, nc_file=nc_file, nc_dir=args.nc_dir)
    mask = vs.nc_voxel_mask(nc, args.nc_threshold, source=nc_file or str(vs.nc_path(subject, args.nc_dir)))
    info = {"n_voxels_total": n_vox, "n_above_nc": int(mask.sum())}
    wanted = [r for r in (args.roi, f"{args.hemisphere}_hemisphere" if args.hemisphere else None) if r]
    if wanted:
        rois = vs.load_roi_file(roi_file, n_vox, subject=subject)
        for name in wanted:
            if name not in rois:
                raise du.DataError(f"{roi_file}: no ROI '{name}' (found {sorted(rois)})")
            roi_mask = np.zeros(n_vox, bool)
            roi_mask[rois[name]] = True
            mask &= roi_mask
        if not mask.any():
            raise du.DataError(f"{subject}: no voxel is both above NC {args.nc_threshold} and in {wanted}")
        info["rois"] = wanted
    return np.flatnonzero(mask), info


def subject_columns(subjects: list[str], chosen: list[tuple[np.ndarray, dict]]) -> dict:
    """The voxel description of a several-subject run: per subject its `select_voxels` record and "columns",
    [start, stop) of its voxels among the head's outputs (side by side in --subject order)."""
    stops = np.cumsum([len(v) for v, _ in chosen])
    return {"subjects": {s: {**info, "columns": [int(stop - len(v)), int(stop)]}
                         for s, (v, info), stop in zip(subjects, chosen, stops)}}


def batch_layout(args, world: int) -> tuple[int, int]:
    """(micro batch per process, gradient-accumulation steps) of --batch-size over `world` processes."""
    if args.batch_size % world:
        raise Stop(f"--batch-size {args.batch_size} is not divisible by {world} processes", EXIT_USAGE)
    micro = args.micro_batch_size or args.batch_size // world
    if (args.batch_size // world) % micro:
        raise Stop(f"per-process batch {args.batch_size // world} is not a multiple of --micro-batch-size {micro}",
                   EXIT_USAGE)
    return micro, args.batch_size // world // micro


@dataclass
class TrainingData:
    """What `load_training_data` read: the split, the target voxels (None for --targets-from) and the stories."""
    timing: dict                                # the TR grids' record (`Ds003020.timing_record`)
    split: du.StorySplit
    lacking: dict                               # several subjects: story -> the subjects without it
    voxels: list[np.ndarray] | None             # per subject, the voxel indices of the head's columns
    vox_info: dict                              # how they were chosen (or the --targets-from record)
    train: list[training.StoryData]
    val: list[training.StoryData]


def load_training_data(args, subjects: list[str], quiet: bool) -> TrainingData:
    """The stories' audio and targets of the training and validation splits, with --target-control applied.

    Raises du.DataError (or ValueError, FileNotFoundError) naming the file and what was expected, and Stop for a
    cache folder that cannot be written.
    """
    subject = "+".join(subjects)
    data = du.open_ds003020(args.data_dir, args.tr, args.trfiles)
    fe_cache = args.front_end_cache_dir if args.cache_front_end else None  # the default one is in --out-dir
    if problem := data.audio_cache_problem() or (fe_cache and writable_dir_problem(fe_cache, "--front-end-cache-dir")):
        raise Stop(problem, EXIT_USAGE)
    timing = data.timing_record()
    has = {s: set(data.stories(s)) for s in subjects}
    for flag, stories in (("--train-stories", args.train_stories), ("--val-stories", args.val_stories)):
        data.check_story_names(stories or [], flag)  # a typo is an error; a story a subject lacks is skipped
    # several subjects: the stories every one of them has (a row of targets is one TR of one story for all)
    split = du.story_split(sorted(set.intersection(*has.values())), args.split, args.train_stories, args.val_stories)
    # stories skipped because only some of the subjects have them: which subjects lack them
    lacking = {story: [s for s in subjects if story not in has[s]] for lst in split.missing.values()
               for story in lst if len(subjects) > 1 and any(story in h for h in has.values())}
    if not split.val:
        raise du.DataError(f"{subject} {'has' if len(subjects) == 1 else 'have in common'} none of the "
                           f"validation stories {args.val_stories or du.VAL_STORIES}")
    for name, stories in (("training", split.train), ("validation", split.val)):
        if args.target_control == "story-swap" and len(stories) < 2:  # found before any response is read
            raise du.DataError(f"--target-control story-swap gives each story the responses of another story "
                               f"of its split, but the {name} split has {len(stories)}: {stories}; give it at "
                               f"least 2 stories or use --target-control block-shuffle")
    targets_from = None
    if args.targets_from:
        try:
            targets_from = load_npz(args.targets_from)
        except NPY_READ_ERRORS as err:  # also a .npz holding pickled (object) arrays
            raise du.DataError(f"{args.targets_from}: not a readable .npz of story -> (TRs, F) targets "
                               f"({npy_read_problem(args.targets_from, err)})") from err
        voxels, vox_info = None, {"targets_from": args.targets_from, "targets_sha256": file_sha256(args.targets_from),
                                  **teacher_record(args.targets_from, timing)}
    else:
        chosen = [select_voxels(args, data, s, nc, roi) for s, nc, roi in
                  zip(subjects, per_subject(args.nc_file, len(subjects)), per_subject(args.roi_file, len(subjects)))]
        voxels = [v for v, _ in chosen]
        vox_info = chosen[0][1] if len(subjects) == 1 else subject_columns(subjects, chosen)
    train_stories, val_stories = (training.load_story_data(data, subjects, stories, voxels, targets_from, quiet=quiet,
                                                           targets_source=args.targets_from)
                                  for stories in (split.train, split.val))
    if args.target_control:
        train_stories = training.apply_target_control(train_stories, args.target_control, args.seed)
        val_stories = training.apply_target_control(val_stories, args.target_control, args.seed + 1)
    return TrainingData(timing, split, lacking, voxels, vox_info, train_stories, val_stories)


def skipped_stories_note(subjects: list[str], split: du.StorySplit, lacking: dict) -> str:
    """The stderr note for requested stories without responses (several subjects: which of them lack each)."""
    subject = "+".join(subjects)
    brief = {k: f"{len(v)}: {first_few(v)}" for k, v in split.missing.items()}
    if len(subjects) == 1:
        return f"note: {subject} has no responses for requested stories {brief}; skipped"
    who = "; ".join(f"{story}: {', '.join(ss)}" for story, ss in lacking.items())
    return (f"note: not every one of {subject} has responses for requested stories {brief}; skipped"
            + (f" (only some lack them: {who})" if lacking else ""))


def build_model(args, n_targets: int) -> tuple[models.BrainTuningModel, object, str, list | None]:
    """The backbone (feature encoder and --freeze-layers frozen, LoRA adapters if asked) and its voxel head.

    Returns (model on the CPU, feature extractor, model type, the LoRA target modules or None). Raises Stop
    (exit 2) for a model that cannot be loaded or adapted.
    """
    try:
        backbone, extractor, model_type = models.load_backbone(args.model_name, revision=args.revision)
        encoder = models.SpeechEncoder(backbone, extractor, model_type, args.whisper_mode)
        encoder.freeze_feature_encoder()
        lora_targets = None
        if args.lora_rank:
            lora_targets = models.apply_lora(encoder, args.lora_rank, args.lora_alpha, args.lora_dropout,
                                             args.lora_targets, skip_blocks=args.freeze_layers)
        encoder.freeze_bottom_layers(args.freeze_layers)
    except models.ModelError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    head = models.VoxelHead(encoder.hidden_size, n_targets, args.head_rank)
    return models.BrainTuningModel(encoder, head), extractor, model_type, lora_targets


def cached_front_end(cache_dir: Path, encoder, train_set, val_set, device, precision: str, micro: int, rank: int,
                     world: int, quiet: bool) -> tuple:
    """The two window sets as front-end-cached datasets (`front_end_cache.build_front_end_cache`), and the
    cache's record for config.json. Raises Stop (exit 2) when the frozen front end cannot be cached."""
    from front_end_cache import build_front_end_cache
    try:
        train_set, val_set = (build_front_end_cache(cache_dir, encoder, ds, device, precision, micro, rank=rank,
                                                    world=world, quiet=quiet) for ds in (train_set, val_set))
    except models.ModelError as err:
        raise Stop(f"--cache-front-end: {err}", EXIT_USAGE) from err
    return train_set, val_set, {"dir": str(cache_dir), "blocks_included": encoder.front_blocks,
                                "gigabytes": round((train_set.meta["bytes"] + val_set.meta["bytes"]) / 1e9, 3)}


def save_target_voxels(out_dir: Path, subjects: list[str], voxels: list[np.ndarray] | None) -> None:
    """target_voxels.npy (several subjects: target_voxels_<SUBJ>.npy, the head's columns in --subject order)."""
    if voxels is not None and len(subjects) == 1:
        save_npy_atomic(out_dir / "target_voxels.npy", voxels[0])
    elif voxels is not None:  # the head's columns vox_info["subjects"][s]["columns"] are these voxels of s
        for s, v in zip(subjects, voxels):
            save_npy_atomic(out_dir / f"target_voxels_{s}.npy", v)


def ridge_initial_head(args, model, train_set, val_set, val_loader, micro: int, device, precision: str, quiet: bool,
                       world: int) -> tuple[dict, dict | None]:
    """--init-head ridge: fit the voxel head on the frozen start's pooled features (`training.init_head_ridge`), the
    same head on every process. Returns (its record for config.json, the epoch-0 validation metrics, or None when
    they must still be computed). Raises Stop (exit 2) when the ridge cannot be fitted."""
    try:
        pooled_file = None
        if args.cache_front_end and world == 1:  # a control run reuses its tuned run's (same start, same windows)
            from front_end_cache import pooled_features_path
            pooled_file = pooled_features_path(train_set, val_set, model.encoder)
        head_info = training.init_head_ridge(model, torch.utils.data.DataLoader(train_set, batch_size=micro),
                                             val_loader, device, precision, quiet, feature_file=pooled_file,
                                             loss_kind=args.loss)
        initial_val = head_info.pop("initial_val")
    except ValueError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    if world > 1:  # identical start on every rank
        for p in model.head.parameters():
            torch.distributed.broadcast(p.data, src=0)
        initial_val = None  # validate the broadcast head itself
    return head_info, initial_val


def finish_run(args, out_dir: Path, run_config: dict, state: dict, title: str) -> None:
    """After the last epoch: loss_curve.png, the run's outcome in config.json, a warning when no tuned epoch beat
    epoch 0, and the default front-end cache removed."""
    from plotting import plot_loss_curve
    plot_loss_curve(state["metrics"], out_dir / "loss_curve.png", title=title)
    # best/ is the best tuned epoch (>= 1); say so when even that did not improve on where tuning started
    initial = state["metrics"][0]["val_loss"]
    beats = None if state["best_val"] is None or not math.isfinite(initial) else bool(state["best_val"] < initial)
    run_config.update(finished=timestamp(), best_epoch=state["best_epoch"], best_val_loss=state["best_val"],
                      initial_val_loss=initial, best_beats_initial=beats,
                      stopped_early=state["epoch"] < args.num_epochs)
    write_json_atomic(out_dir / "config.json", run_config)
    if beats is False:
        print(f"warning: no tuned epoch has a lower validation loss than epoch 0, the {args.init_head} initial head "
              f"({initial:.4f}): best/ holds epoch {state['best_epoch']} ({state['best_val']:.4f}), the best tuned "
              f"epoch, not an improvement on the start (metrics.csv; config.json 'best_beats_initial': false)"
              + ("; expected of a --target-control run, whose targets are decoupled from the audio"
                 if args.target_control else ""), file=sys.stderr)
    if args.cache_front_end and not args.front_end_cache_dir:  # derived data: free the disk
        shutil.rmtree(out_dir / "front_end_cache", ignore_errors=True)
    print(f"best epoch {state['best_epoch']} (val loss {state['best_val']:.4f}); model in {out_dir / 'best'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    if (problem := writable_dir_problem(out_dir, "--out-dir")) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # one run at a time per --out-dir (a job resubmitted while the first still runs): rank 0 writes, so it holds it
    return run_claimed([out_dir], "brain-tuning run", lambda: train(args),
                       enabled=int(os.environ.get("RANK", "0")) == 0)


def train(args) -> int:
    """The run of main(), once --out-dir is this process's: config, data, model, loop; returns the exit code."""
    micro = args.micro_batch_size or "the whole per-process --batch-size"
    return exit_code(lambda: _train(args), out_of_memory=(
        f"lower --micro-batch-size (now {micro}): each optimizer step still averages --batch-size {args.batch_size} "
        f"windows (gradient accumulation): the same training up to float rounding"))


def _train(args) -> int:
    """The stages of a run, top to bottom; a refusal raises Stop (train() prints it and returns its code)."""
    rank, world, local_rank = training.distributed_setup()
    is_main = rank == 0
    out_dir = Path(args.out_dir)
    try:
        device = resolve_device(args.device, local_rank if world > 1 else None)
    except ValueError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    precision = resolve_precision(args.precision, device)
    micro, accum = batch_layout(args, world)
    if (problem := flag_problem(args)) is not None:  # refused before anything is loaded or written
        raise Stop(problem, EXIT_USAGE)

    # ---------------------------------------------------------------- config and out-dir
    subjects = subject_list(args)
    subject = "+".join(subjects)  # for messages and titles
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "no_progress", "stop_after_steps")}
    config["subject"] = subjects[0] if len(subjects) == 1 else subjects
    old_run = prepare_out_dir(args, config, out_dir, world, is_main)
    set_seed(args.seed)

    # ---------------------------------------------------------------- data
    try:
        data = load_training_data(args, subjects, quiet=args.no_progress or rank != 0)
    except (du.DataError, ValueError, FileNotFoundError) as err:
        raise Stop(str(err), EXIT_DATA) from err
    split = data.split
    if is_main and split.missing:
        print(skipped_stories_note(subjects, split, data.lacking), file=sys.stderr)
    train_set, val_set = training.WindowDataset(data.train), training.WindowDataset(data.val)
    n_targets = data.train[0].targets.shape[1]

    # ---------------------------------------------------------------- model
    model, extractor, model_type, lora_targets = build_model(args, n_targets)
    if is_main and (note := models.whisper_mode_note(args.model_name, None, model_type, args.whisper_mode)):
        print(note, file=sys.stderr)
    hidden = model.encoder.hidden_size
    if is_main and args.head_rank and args.head_rank >= min(hidden, n_targets):  # a full-rank map, factored
        print(f"note: --head-rank {args.head_rank} is not below min(hidden size {hidden}, voxels {n_targets}): the "
              f"readout is not low-rank, only factored in two", file=sys.stderr)
    model = model.to(device)
    encoder = model.encoder
    cache_info = None
    if args.cache_front_end:
        cache_dir = Path(args.front_end_cache_dir or out_dir / "front_end_cache")
        train_set, val_set, cache_info = cached_front_end(cache_dir, encoder, train_set, val_set, device, precision,
                                                          micro, rank, world, quiet=args.no_progress or not is_main)
    backbone_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if is_main and args.freeze_layers == encoder.num_layers:  # a head-only run: allowed, but said
        above = sum(p.numel() for p in backbone_params)
        print(f"note: --freeze-layers {args.freeze_layers} freezes every transformer layer: only the voxel head is "
              f"tuned{f' (and the {above} parameters of the final layer norm)' if above else ''}", file=sys.stderr)
    optimizer = torch.optim.Adam([{"params": backbone_params, "lr": args.lr},
                                  {"params": model.head.parameters(), "lr": args.head_lr}])
    steps_per_epoch = -(-len(train_set) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, training.warmup_linear_decay(steps_per_epoch * args.num_epochs, args.warmup_fraction))
    ddp_model = model
    if world > 1:
        # LayerDrop skips whole blocks in some steps: their parameters get no gradient, which DDP must be told
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=encoder.layerdrop > 0)

    config.update({
        "resolved": {"model_revision": models.hub_revision(args.model_name, args.revision), "device": str(device),
                     "precision": precision, "world_size": world, "micro_batch_size": micro, "timing": data.timing,
                     "grad_accum_steps": accum, "steps_per_epoch": steps_per_epoch, "model_type": model_type,
                     "layerdrop": encoder.layerdrop,
                     "n_targets": n_targets, "voxels": data.vox_info, "front_end_cache": cache_info,
                     "lora_targets": lora_targets, "trainable_backbone_params": sum(p.numel() for p in backbone_params),
                     "train_windows": len(train_set), "val_windows": len(val_set),
                     "window_samples": train_set.length, "pooling": "mean of last hidden state over real-audio frames",
                     "target_control_applies_to": "train and validation stories" if args.target_control else None},
        "stories": {**split.as_dict(), **({"lacking_subjects": data.lacking} if len(subjects) > 1 else {})}})
    # ---------------------------------------------------------------- resume
    state = {"epoch": 0, "step": 0, "best_val": None, "best_epoch": None, "bad_epochs": 0, "metrics": []}
    last = recover_dir(out_dir / "last") if args.resume else None
    if last is not None and (problem := resumed_targets_problem(out_dir, old_run, subjects, data.voxels,
                                                                data.vox_info) or resumed_data_problem(old_run, config)):
        raise Stop(problem, EXIT_DATA)
    if last is not None and is_main and moved(old_run["args"].get("data_dir"), config["data_dir"]):
        print(f"note: resuming on the dataset at {config['data_dir']}, moved from {old_run['args'].get('data_dir')} "
              f"(same stories, windows and TR grids)", file=sys.stderr)
    if last is not None:
        try:
            state = training.load_training_state(last, model, optimizer, scheduler)
        except du.DataError as err:
            raise Stop(str(err), EXIT_DATA) from err
        if is_main:
            print(f"resumed from {last} after epoch {state['epoch']}")
    elif args.resume and is_main:
        print(f"note: nothing to resume in {out_dir} (no last/ checkpoint); starting at epoch 0", file=sys.stderr)
    run_config = {"args": config, "command": command_line(), "started": timestamp(), "versions": package_versions()}
    if last is not None:  # the record stays the first start's; each resumption is added to it
        resume_record(run_config, config, old_run, state)
    if is_main:
        write_json_atomic(out_dir / "config.json", run_config)
        save_target_voxels(out_dir, subjects, data.voxels)

    # ---------------------------------------------------------------- loop
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=micro, shuffle=False, num_workers=args.num_workers)
    quiet = args.no_progress or not is_main
    initial_val = None  # epoch-0 validation, known already when the ridge init computed the pooled features
    if not state["metrics"] and args.init_head == "ridge":
        head_info, initial_val = ridge_initial_head(args, model, train_set, val_set, val_loader, micro, device,
                                                    precision, quiet, world)
        if is_main:
            print(f"voxel head initialised by ridge (median alpha {head_info['median_alpha']:.3g}; pooled features "
                  f"{head_info['pooled_features']})", flush=True)
            run_config["head_init"] = head_info
            write_json_atomic(out_dir / "config.json", run_config)
    if not state["metrics"]:  # epoch 0: the initial head (untrained or ridge), the reference tuning is judged by
        if initial_val is None:
            initial_val = training.evaluate(model, val_loader, args.loss, device, precision, quiet)
        state["metrics"].append({"epoch": 0, "train_loss": float("nan"), **initial_val,
                                 "lr": 0.0, "head_lr": 0.0, "seconds": 0.0})
    for epoch in range(state["epoch"] + 1, args.num_epochs + 1):
        if state["bad_epochs"] >= args.patience:
            break
        # dropout, SpecAugment masks (numpy) and order depend on (seed, epoch) only: a resumed run is exact
        set_seed(args.seed * 100003 + epoch)
        loader = training.epoch_loader(train_set, epoch, args.seed, micro, args.num_workers, device, rank, world)
        t0 = training.epoch_timer()
        try:
            train_loss, steps = training.train_one_epoch(
                ddp_model, loader, optimizer, scheduler, args.loss, accum, device, precision, desc=f"epoch {epoch}",
                stop_after_steps=args.stop_after_steps, step_offset=state["step"], disable_progress=quiet)
        except training.TrainingDiverged as err:
            if is_main:
                run_config.update(diverged=str(err), stopped=timestamp())
                write_json_atomic(out_dir / "config.json", run_config)
                kept = (f"best/ and last/ hold epochs {state['best_epoch']} and {state['epoch']}" if state["best_epoch"]
                        else "no epoch had finished, so there is no best/ or last/")
                print(f"error: {out_dir}: {err}. Nothing of epoch {epoch} was saved; {kept}. Start again with a lower "
                      f"--lr (or --precision fp32) in a new --out-dir or with --overwrite; --resume would repeat it",
                      file=sys.stderr)
            if world > 1:
                torch.distributed.destroy_process_group()
            return EXIT_DIVERGED
        if world > 1:
            training.check_replicas_in_sync(model, epoch)
            t = torch.tensor([train_loss], device=device)
            torch.distributed.all_reduce(t)
            train_loss = t.item() / world
        val = training.evaluate(model, val_loader, args.loss, device, precision, disable_progress=quiet)
        if world > 1:  # rank 0's numbers decide for all: GPU rounding must not split best-epoch or patience decisions
            shared = [val]
            torch.distributed.broadcast_object_list(shared, src=0)
            val = shared[0]
        state["step"] += steps
        row = {"epoch": epoch, "train_loss": train_loss, **val, "lr": optimizer.param_groups[0]["lr"],
               "head_lr": optimizer.param_groups[1]["lr"], "seconds": round(training.epoch_timer() - t0, 2)}
        state["metrics"].append(row)
        # a non-finite validation loss (predictions overflowing in bf16) is never an improvement
        improved = math.isfinite(val["val_loss"]) and (state["best_val"] is None or val["val_loss"] < state["best_val"])
        if improved:
            state.update(best_val=val["val_loss"], best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        if is_main:
            best_record = None if not improved else {
                "epoch": epoch, **val, "subject": config["subject"], "base_model": args.model_name,
                "base_model_revision": config["resolved"]["model_revision"],
                "stories": {"train": split.train, "val": split.val},
                **({"whisper_mode": args.whisper_mode} if model_type == "whisper" else {})}
            training.save_epoch(out_dir, model, extractor, optimizer, scheduler, state, best_record)
            print(f"epoch {epoch}: train {train_loss:.4f}  val {val['val_loss']:.4f}  val r {val['val_corr']:.4f}"
                  f"{'  *best*' if improved else ''}", flush=True)
        if world > 1:
            torch.distributed.barrier()

    if is_main:
        finish_run(args, out_dir, run_config, state, title=f"{subject} · {Path(args.model_name).name}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
