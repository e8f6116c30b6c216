"""`make demo`: the paper's experiment on the built-in miniature with the real pretrained Whisper tiny.en.

    python run_demo.py [--out runs/demo] [--seed 0] [--quick] [--seeds 0 1 2 [--resume]] [--diagnostics] [--teacher]

Steps (each one is the toolkit's own CLI, called in-process with the arguments a real run would take):
build the miniature fMRI dataset and the miniature downstream datasets (side by side); convert the bundled
Whisper tiny.en to a HF model directory; brain-tune it on UTS01; brain-tune a block-shuffled random-target
control; evaluate the pretrained, tuned and control models in one run (with the low-level residual analysis;
their shared frozen bottom computed once); probe all three (one run per task, the bottom shared again); with
`--diagnostics`, post-hoc diagnostics (category of story words in context, and of words in neutral sentences,
by layer) reported apart from the findings (~2.5 min on 2 cores, so not part of `make demo`); with `--teacher`, a
teacher-tuned ("LM-tuned") control as a fourth model: identical training on the miniature's english1000 word
embedding at the response rows (`make_teacher_targets.py`), evaluated and probed with the others; write
OUT/REPORT.md with tables, plots and the findings checked against the paper's, and
print the headline.
The demo only chooses data, model and budget flags (DEMO_* below); `--seeds` repeats it per seed and
writes OUT/SEEDS.md; with `--resume` a seed already finished with the same settings by the same commit of
unmodified code (its findings.json says so) is read back instead of re-run. Exit code 0 when the pipeline ran
(findings that do not hold are reported, not hidden); 2 when --out is a folder that is not an earlier demo output
(the demo replaces what it finds there), leaving it untouched.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

SUBJECT = "UTS01"
MODEL_DIR = Path("models/whisper-tiny.en")
# Budget flags: truncated Whisper positions, one epoch over the miniature's 12 training stories with the bottom
# 2 of 4 layers frozen (their output cached once per window, shared by the tuned and the control run), TR-stride
# features. One epoch over 12 stories rather than two over 6 (52 and 53 steps at batch 16): lower validation loss in every
# seed. Batch and learning rate by the same criterion, the validation stories' loss: batch 2 (420 steps), as 8 was
# below 16, 4 below 8 and 2 below 4 in every seed, each at about the same epoch time (halving stopped at 2 by a rule
# fixed in advance); then lr 5e-4, re-checked at batch 2: below 1e-4 and 2e-4 in every seed, 1e-3 not lower by the
# rule's 0.001. Never by the test story (docs/demo_record.md).
DEMO_TRAIN_FLAGS = ["--whisper-mode", "truncate", "--batch-size", "2", "--lr", "5e-4", "--head-lr", "5e-4",
                    "--num-epochs", "1", "--freeze-layers", "2", "--init-head", "ridge", "--cache-front-end"]
# The encoding models train on every story but the test one (the default, as in real runs).
DEMO_EVAL_FLAGS = ["--whisper-mode", "truncate", "--stride", "2.0", "--context", "6", "--low-level"]
PROBE_TASKS = [("semantic_category", "words"), ("phonemes", "timit"), ("sentence_type", "timit"),
               ("commands", "speech_commands"), ("emotion", "crema_d"), ("intent", "slurp")]
# --quick (CI): the same data and recipe, without the control run and with the semantic probe only.
QUICK_PROBE_TASKS = PROBE_TASKS[:1]
RUN_RECORD = "demo_run.json"  # a seed's settings, command and versions, written when its run starts
DEMO_MARKERS = (RUN_RECORD, "findings.json", "SEEDS.md")  # what only a demo output holds


def _step(name: str, fn, *args) -> None:
    t0 = time.perf_counter()
    print(f"\n=== {name}", flush=True)
    rc = fn(*args)
    if isinstance(rc, int) and rc != 0:
        raise SystemExit(f"demo step '{name}' failed with exit code {rc}")
    print(f"=== {name}: {time.perf_counter() - t0:.0f} s", flush=True)


def _build_side_by_side(*jobs) -> None:
    """Run (build function, folder, kwargs) jobs in parallel processes: speech synthesis is single-threaded."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    # spawn: the parent has torch (and its thread pools) loaded, which fork does not copy safely
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in [pool.submit(fn, folder, **kwargs) for fn, folder, kwargs in jobs]:
            done.result()  # re-raises a failed build's exception here


def demo_settings(seed: int, quick: bool, size: str, diagnostics: bool, teacher: bool = False) -> dict:
    """What decides a seed's results: its options, the recipe's flags, the code (git commit, modified or not),
    the device and precision the steps pick, and the CPU (another CPU model changes the digits, see
    run_utils.cpu_identity), so that `--resume` never mixes seeds from two kinds of machine."""
    from run_utils import cpu_identity, resolve_device, resolve_precision, toolkit_version
    device = resolve_device("auto")  # what every step's --device auto picks: a CUDA GPU (bf16) changes the numbers
    return {"seed": seed, "quick": quick, "size": size, "diagnostics": diagnostics, "teacher": teacher,
            "train_flags": DEMO_TRAIN_FLAGS, "eval_flags": DEMO_EVAL_FLAGS, "toolkit": toolkit_version(),
            "device": device.type, "precision": resolve_precision("auto", device), "cpu": cpu_identity()}


def demo_out_problem(outs: list) -> str | None:
    """Why the demo must not write into one of `outs`, else None. The demo replaces the trainer runs, results
    and report it finds in its --out (`--overwrite`), so each folder must be missing, empty or an earlier demo
    output (a single run, killed or finished, or a --seeds run): never a folder of real results."""
    from run_utils import output_dirs_problem
    return output_dirs_problem(outs, DEMO_MARKERS, "run_demo.py output",
                               is_output=lambda folder: any(any(folder.glob(f"seed_*/{m}")) for m in DEMO_MARKERS))


def finished_seed(out: Path, settings: dict) -> tuple[dict | None, str]:
    """The findings in `out` when an earlier run finished them with `settings` and unmodified code, else None;
    with the reason either way (for the log)."""
    import json
    path = out / "findings.json"
    if not path.is_file():
        return None, f"{path} missing"
    try:
        earlier = json.loads(path.read_text())
    except ValueError:  # damaged (it is written atomically, so by something else): the seed runs again
        return None, f"{path} is not valid JSON"
    if not isinstance(earlier, dict) or earlier.get("settings") != settings:
        return None, f"{path} was made with other settings or code"
    if settings["toolkit"]["commit"] is None or settings["toolkit"]["modified"]:
        return None, "the code is not a clean git checkout, so an earlier run's code cannot be told apart"
    return earlier, f"{path}: finished by commit {settings['toolkit']['commit'][:10]} with these settings"


def run_pipeline(out: Path, data: Path, seed: int, quick: bool, progress: bool, size: str = "demo",
                 diagnostics: bool = False, settings: dict | None = None, teacher: bool = False) -> dict:
    """Run every step for one seed; returns the findings (see demo_report.findings), with `settings` (see
    demo_settings, computed here when not given) under "settings".

    Every cache of the run (resampled audio, the evaluation's and the probes' features) is OUT/cache, emptied first
    ($BRAIN_TUNING_CACHE points there during the run): the miniature is rebuilt each time, so an older cache never
    applies, and the user's ~/.cache/brain-tuning gains nothing (each run's resampled audio is ~0.2 GB).
    """
    from file_readers import CACHE_ENV
    cache_dir = (out / "cache").resolve()
    shutil.rmtree(cache_dir, ignore_errors=True)
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(cache_dir)
    try:
        return _run_steps(out, data, seed, quick, progress, size, diagnostics, settings, teacher)
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _run_steps(out: Path, data: Path, seed: int, quick: bool, progress: bool, size: str, diagnostics: bool,
               settings: dict | None, teacher: bool) -> dict:
    settings = settings or demo_settings(seed, quick, size, diagnostics, teacher)
    from atomic_io import write_json_atomic
    from run_utils import creation_record
    (out / "findings.json").unlink(missing_ok=True)  # written last: its presence means this run finished
    # written first: the run's settings and versions, and the mark of a demo folder (demo_out_problem)
    write_json_atomic(out / RUN_RECORD, creation_record(settings))
    import brain_evaluate
    import brain_trainer_story
    import eval_downstream
    import eval_phonemes
    import make_demo_data
    import make_teacher_targets
    import make_downstream_data
    from data_utils import TEST_STORY
    from demo_report import findings, write_report

    quiet = [] if progress else ["--no-progress"]
    ds = data / "miniature"
    _step("build the miniature fMRI and downstream datasets (side by side)", _build_side_by_side,
          (make_demo_data.build, ds, dict(seed=seed, size=size, quiet=not progress)),
          (make_downstream_data.build, data / "downstream", dict(seed=seed, size="demo", quiet=not progress)))
    import whisper_ct2
    if not whisper_ct2.is_converted(MODEL_DIR):
        _step("convert the bundled Whisper tiny.en to a HF model", whisper_ct2.main, ["--out", str(MODEL_DIR)])
    models = {"pretrained": str(MODEL_DIR), "tuned": str(out / "train" / "tuned" / "best"),
              "control": str(out / "train" / "control" / "best")}
    if quick:
        del models["control"]
    if teacher:
        models["teacher"] = str(out / "train" / "teacher" / "best")
    cache = ["--cache-dir", str(out / "cache")]
    common = ["--data-dir", str(ds / "ds003020"), "--subject", SUBJECT, "--nc-dir", str(ds / "subject_NCs")]
    train_flags = DEMO_TRAIN_FLAGS + ["--seed", str(seed)]
    runs = [("tuned", [])] + ([] if quick else [("control", ["--target-control", "block-shuffle"])])
    if teacher:
        targets = out / "train" / "teacher_targets.npz"
        _step("teacher targets (the miniature's english1000 word embedding)", make_teacher_targets.main,
              ["--data-dir", str(ds / "ds003020"), "--word-embedding", "english1000", "--out", str(targets)] + quiet)
        runs.append(("teacher", ["--targets-from", str(targets)]))
    front_cache = out / "train" / "front_end_cache"
    for name, extra in runs:
        _step(f"brain-tune ({name})", brain_trainer_story.main,
              common + ["--model-name", str(MODEL_DIR), "--out-dir", str(out / "train" / name), "--overwrite",
                        "--front-end-cache-dir", str(front_cache)] + train_flags + extra + quiet)
    shutil.rmtree(front_cache, ignore_errors=True)  # ~0.4 GB of derived data
    # one run for all models: the frozen bottom layers they share with the pretrained model are computed once
    _step(f"alignment of the {', '.join(models)} models", brain_evaluate.main,
          common + ["--model-name", *models.values(), "--out", *[str(out / "eval" / m) for m in models],
                    "--roi-file", str(ds / "rois" / f"{SUBJECT}.json"), "--seed", str(seed)]
          + DEMO_EVAL_FLAGS + cache + quiet)
    _step("compare alignment", brain_evaluate.main,
          ["--compare"] + [str(out / "eval" / m) for m in models] + ["--out", str(out / "eval" / "comparison")])
    # each probe runs all models on the same data in one call (their shared frozen bottom computed once)
    all_models = ["--model-name", *models.values()]
    for task, folder in QUICK_PROBE_TASKS if quick else PROBE_TASKS:
        script = eval_phonemes if folder == "timit" else eval_downstream
        _step(f"probe {task} ({', '.join(models)})", script.main,
              ["--task", task, "--data-dir", str(data / "downstream" / folder), *all_models,
               "--out", *[str(out / "probes" / task / m) for m in models], "--whisper-mode", "truncate",
               "--seed", str(seed)] + cache + quiet)
        _step(f"compare {task}", script.main,
              ["--compare"] + [str(out / "probes" / task / m) for m in models] + ["--out", str(out / "probes" / task)])
    _step(f"semantic preference ({', '.join(models)})", eval_downstream.main,
          ["--task", "semantic_preference", "--data-dir", str(ds / "ds003020"), *all_models,
           "--out", *[str(out / "probes" / "semantic_preference" / m) for m in models], "--whisper-mode", "truncate",
           "--pairs", str(data / "downstream" / "words" / "semantic_pairs.tsv"), "--stories", TEST_STORY]
          + quiet)
    if diagnostics and not quick:  # reported apart from the findings (see demo_report.diagnostic_section)
        carriers = data / "downstream" / "words_in_carriers"
        for diagnostic, what, corpus in (
                ("story_word_category", "story words in context", ["--data-dir", str(ds / "ds003020")]),
                ("carrier_word_category", "words in neutral sentences",
                 ["--corpus", "aligned", "--data-dir", str(carriers)])):
            diag = out / "diagnostics" / diagnostic
            _step(f"diagnostic: category of {what} ({', '.join(models)})", eval_downstream.main,
                  ["--task", "story_word_category", *all_models, "--out", *[str(diag / m) for m in models],
                   "--whisper-mode", "truncate", "--word-labels", str(ds / "ground_truth" / "word_categories.tsv"),
                   "--seed", str(seed)] + corpus + quiet)
            _step(f"compare the diagnostic ({what})", eval_downstream.main,
                  ["--compare"] + [str(diag / m) for m in models] + ["--out", str(diag)])
    result = findings(out, list(models))
    result["settings"] = settings
    write_report(out, result, seed=seed, quick=quick, train_flags=train_flags, eval_flags=DEMO_EVAL_FLAGS)
    return result


def main(argv=None) -> int:
    from run_utils import nonnegative_int
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="where REPORT.md and every step's outputs go "
                                                          "(default runs/demo)")
    parser.add_argument("--data", default="data", help="where the miniature datasets are built")
    one_or_several = parser.add_mutually_exclusive_group()  # --seed beside --seeds would be ignored
    one_or_several.add_argument("--seed", type=nonnegative_int, default=0,
                                help="seed of the data, the tuning and the probes")
    one_or_several.add_argument("--seeds", type=nonnegative_int, nargs="+",
                                help="run the whole demo once per seed (OUT/seed_<s>)")
    parser.add_argument("--quick", action="store_true", help="no control run, semantic probe only (CI)")
    parser.add_argument("--size", choices=("demo", "large"), default="demo",
                        help="miniature flavour: demo (12 training stories, ~43 min of audio) or large (all 24, "
                             "for scaling experiments; ~2x the tuning time); the tiny one's 20 test TRs are too few")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also run the post-hoc word-category diagnostics (~2.5 min on 2 cores)")
    parser.add_argument("--teacher", action="store_true",
                        help="also tune and evaluate a teacher-tuned control (the miniature's english1000 word "
                             "embedding as targets), reported beside the others")
    parser.add_argument("--resume", action="store_true",
                        help="with --seeds: read back the seeds finished with the same settings and code")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (batch logs)")
    args = parser.parse_args(argv)
    if args.resume and not args.seeds:
        parser.error("--resume needs --seeds (a single seed is one run)")
    if args.seeds and len(set(args.seeds)) < len(args.seeds):  # it would run again and count once in SEEDS.md
        parser.error(f"--seeds names a seed more than once: {args.seeds}")
    from run_utils import EXIT_USAGE, exit_code, run_claimed, writable_dir_problem
    out = Path(args.out)
    if ((problem := demo_out_problem([out] + [out / f"seed_{s}" for s in args.seeds or []])) is not None
            or (problem := writable_dir_problem(args.data, "--data (where the miniatures are built)")) is not None):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # one demo at a time per --out and --data (a second `make demo` in this checkout would rebuild the miniature
    # under the first one's feet and mix their runs)
    return run_claimed([out, Path(args.data)], "run_demo.py run", lambda: exit_code(lambda: run_demos(args, out)))


def run_demos(args, out: Path) -> int:
    """The run of main(), once --out and --data are this process's: one seed or several; returns 0."""
    from demo_report import headline, write_seed_summary
    t0 = time.perf_counter()
    if args.seeds:
        results = {}
        for s in args.seeds:
            settings = demo_settings(s, args.quick, args.size, args.diagnostics, args.teacher)
            if args.resume:
                results[s], why = finished_seed(out / f"seed_{s}", settings)
                print(f"seed {s}: {'read back' if results[s] else 'to run'} ({why})", flush=True)
                if results[s]:
                    continue
            results[s] = run_pipeline(out / f"seed_{s}", Path(args.data) / f"seed_{s}", s, args.quick,
                                      not args.no_progress, args.size, args.diagnostics, settings, args.teacher)
        print(write_seed_summary(out, results))
    else:
        result = run_pipeline(out, Path(args.data), args.seed, args.quick, not args.no_progress, args.size,
                              args.diagnostics, teacher=args.teacher)
        print("\n" + headline(result))
        print(f"report: {out / 'REPORT.md'}")
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
