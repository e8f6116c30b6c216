"""Command-line plumbing shared by eval_phonemes.py and eval_downstream.py: flags, model loading, dispatch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import data_utils as du
import models
from alignment import upper_middle_note
from file_readers import default_cache_dir
from inference import inference_threads
from run_utils import (EXIT_DATA, EXIT_USAGE, HelpFormatter, Stop, compare_count_problem, exit_code,
                       ignored_flags_problem, model_run_usage_problem, nonnegative_int, out_among_inputs,
                       output_dirs_problem, positive_int, read_result_json, resolve_device, run_claimed, set_seed,
                       writable_dir_problem)


def common_parser(description: str, tasks: list[str], data_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--task", choices=tasks, default=tasks[0], help="what to probe (README: Downstream probes)")
    p.add_argument("--data-dir", help=data_help)
    p.add_argument("--model-name", nargs="+", help="hub id, local model dir, or a trainer's best/; several models "
                   "(e.g. pretrained, tuned, control) are probed on the same data, one --out folder each")
    p.add_argument("--revision", default="main", help="hub branch, tag or commit of the --model-name hub ids (local "
                                                       "folders have one version)")
    p.add_argument("--out", nargs="+", required=True, help="result folder, one per --model-name (or of --compare)")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="only compare earlier result folders (first = reference)")
    p.add_argument("--labels", nargs="+", help="model names for --compare, one per folder (default: the folder names)")
    p.add_argument("--layers", type=int, nargs="+", help="hidden-state indices (default: all transformer layers)")
    p.add_argument("--whisper-mode", default="pad30", choices=models.WHISPER_MODES,
                   help="pad30 = pad to 30 s, pool valid frames; truncate = positions cut to the audio")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="utterances per forward pass (of one length; Whisper pad30 on a GPU: of any lengths, as it pads "
                        "each to 30 s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--inference-threads", type=positive_int,
                   help="batches run side by side, each op on one core (default: torch's CPU threads on a CPU, 1 on "
                        "a GPU; same numbers, faster on CPUs where small ops scale poorly)")
    p.add_argument("--cache-dir", help="feature cache (default: $BRAIN_TUNING_CACHE/probes, else ~/.cache/brain-tuning/probes)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the probes' training")
    p.add_argument("--permutations", type=nonnegative_int, default=0, metavar="N",
                   help="multiclass utterance tasks: also the chance distribution of each layer's test F1 macro, from "
                        "N probes refitted on labels shuffled among the held-out units (words for semantic_category); "
                        "~0.1 s per probe on 2 cores for the miniature's words")
    p.add_argument("--weight-decay-fit", choices=list(WEIGHT_DECAY_FITS),
                   help="how each probe's weight decays are fitted: side-by-side, as slices of one layer (the same "
                        "fits up to rounding; 3.7x faster on an H200, 2.3x on a 2-core CPU) or one-after-another "
                        "(bit-identical to earlier runs); auto (the default): side by side on a GPU only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


WEIGHT_DECAY_FITS = {"auto": None, "side-by-side": True, "one-after-another": False}


def task_flags_problem(args, task_flags) -> str | None:
    """The first of `task_flags`, (flag, dest, tasks it applies to), given with another --task (it would be silently
    ignored), as the message for exit 2; else None."""
    for flag, dest, tasks in task_flags:
        if getattr(args, dest) is not None and args.task not in tasks:
            return f"{flag} applies to --task {' or '.join(tasks)}, not {args.task}"
    return None


def side_by_side(args) -> bool | None:
    """--weight-decay-fit as `probes.fit_linear_probe`'s side_by_side (None: decided by the device)."""
    return WEIGHT_DECAY_FITS[args.weight_decay_fit or "auto"]


def load_models(args) -> list:
    """A probe_tasks.ProbedModel per --model-name: frozen encoder, validated layers (default 1..num_layers), --out."""
    from probe_tasks import ProbedModel
    probed = []
    for name, out in zip(args.model_name, args.out):
        backbone, extractor, model_type = models.load_backbone(name, revision=args.revision)
        encoder = models.SpeechEncoder(backbone, extractor, model_type, args.whisper_mode)
        n = encoder.num_layers
        layers = sorted(set(args.layers)) if args.layers else list(range(1, n + 1))
        bad = [l for l in layers if not 0 <= l <= n]
        if bad:
            raise models.ModelError(f"--layers {bad} out of range: {name} has hidden states 0..{n}")
        if note := upper_middle_note(layers, n, name):
            print(note, file=sys.stderr)
        if note := models.whisper_mode_note(name, models.tuned_whisper_mode(name), model_type, args.whisper_mode):
            print(note, file=sys.stderr)
        probed.append(ProbedModel(encoder, name, layers, Path(out), args.revision))
    return probed


def is_probe_output(folder: Path) -> bool:
    """Whether `folder` holds a probe result, finished or not (its config.json names a task, or it holds a layer
    result of `probe_tasks.write_layer_probe`: a run killed before its config.json)."""
    try:
        return "task" in read_result_json(folder, "config.json", "probe", ("args",), objects=("args",))["args"]
    except (OSError, ValueError):
        pass
    from probe_tasks import stored_layer_probe
    return any(stored_layer_probe(path) is not None for path in Path(folder).glob("layer_*.json"))


def run(args, task_runner, read_inputs: Callable[[], None] | None = None) -> int:
    """Validate flags, load the models, call `task_runner(args, probed_models, device, cache_dir)`; map errors to exit codes.

    `read_inputs()`: reads the task's small input files (word lists), raising one of `DATA_ERRORS` that names the
    file; called once the flags are checked, before any model loads.
    """
    if args.labels and not args.compare:
        print("error: --labels names the models of --compare", file=sys.stderr)
        return EXIT_USAGE
    if args.compare:
        if len(args.out) != 1:
            print(f"error: --compare writes one --out folder, found {len(args.out)}", file=sys.stderr)
            return EXIT_USAGE
        ignored = ("data_dir", "model_name", "weight_decay_fit")
        if (problem := ignored_flags_problem(args, "--compare", ignored) or compare_count_problem(args.compare)):
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_USAGE
        if (problem := out_among_inputs(args.out[0], args.compare)) is not None:
            print(f"error: --compare: {problem}", file=sys.stderr)
            return EXIT_USAGE
        # one writer at a time: two comparisons into one --out would mix their files
        return run_claimed(args.out, "probe run", lambda: write_comparison(args))
    from probe_tasks import probe_fit_flags_problem
    if (problem := model_run_usage_problem(args, ("data_dir", "model_name"))
            or probe_fit_flags_problem(args.task, args.permutations, args.weight_decay_fit)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if (problem := output_dirs_problem(args.out, ("results.json",), "probe result", is_probe_output)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if not Path(args.data_dir).is_dir():  # a mistyped path: say so before the models load, not "no TRAIN/ folder"
        found = "a file" if Path(args.data_dir).exists() else "nothing"
        print(f"error: --data-dir {args.data_dir}: expected the dataset's folder, found {found}", file=sys.stderr)
        return EXIT_DATA
    try:
        if read_inputs is not None:
            read_inputs()
    except du.DATA_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA
    # one probe run at a time per --out (a second would mix its results with this one's config)
    return run_claimed(args.out, "probe run", lambda: run_models(args, task_runner))


def write_comparison(args) -> int:
    """--compare into the one --out, once it is this process's; returns the exit code."""
    from probe_tasks import compare_probe_results
    try:
        compare_probe_results([Path(d) for d in args.compare], Path(args.out[0]), args.labels)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def run_models(args, task_runner) -> int:
    """The run of `run` over --model-name, once every --out is this process's; returns the exit code."""
    return exit_code(lambda: _run_models(args, task_runner), out_of_memory=(
        f"lower --batch-size (utterances per forward pass, now {args.batch_size}): the same features up to "
        f"float rounding"))


def _run_models(args, task_runner) -> int:
    """Device, feature cache, models, then the task; a refusal raises Stop (run_models() prints it and returns its
    code)."""
    from probe_tasks import TaskUsageError
    set_seed(args.seed)
    try:
        device = resolve_device(args.device)
        args.device = str(device)  # recorded resolved: where features were extracted and probes fitted
        args.inference_threads = inference_threads(args.inference_threads, device)  # recorded resolved
    except ValueError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir() / "probes"
    if problem := writable_dir_problem(cache_dir, "the feature cache (--cache-dir)"):
        raise Stop(problem, EXIT_USAGE)
    try:
        probed = load_models(args)
    except models.ModelError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    try:
        task_runner(args, probed, device, cache_dir)
    except du.DATA_ERRORS as err:  # a file missing or unreadable, an alignment past its audio
        raise Stop(str(err), EXIT_DATA) from err
    except (TaskUsageError, models.ModelError) as err:  # the second: a model whose hidden states are not finite
        raise Stop(str(err), EXIT_USAGE) from err
    return 0
