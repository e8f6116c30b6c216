"""Noise-ceiling-normalised alignment of a speech model's layers with one subject's fMRI (held-out story).

    python brain_evaluate.py --data-dir /path/to/ds003020 --subject UTS03 \
        --model-name facebook/wav2vec2-base --out results/w2v_UTS03 [--roi-file rois.json] [--low-level]
    python brain_evaluate.py ... --model-name facebook/wav2vec2-base runs/x/best --out results/pre results/tuned
    python brain_evaluate.py --compare results/pre results/tuned results/control --out results/cmp
    python brain_evaluate.py --subject-results results/UTS01/pre results/UTS01/tuned \
        --subject-results results/UTS02/pre results/UTS02/tuned ... --out results/group

A trainer's `best/` folder is a model like any other (--model-name runs/x/best); a model tuned on subject A
evaluated with --subject B is the cross-subject transfer analysis. Outputs: layer_<l>.npz (voxelwise r,
cc_max, cc_norm, alphas; upper-middle layers: ROI voxels' test predictions), test_responses_roi.npz, summary.json,
table.md, alignment_by_layer.png, config.json. Several models (one --out each) are evaluated on one load of the
data, and the bottom a tuned model shares with its pretrained start (front end and `--freeze-layers` blocks,
compared weight by weight) is computed once: same numbers, less time. `--subject-results` (once per subject)
summarises the same models across subjects: mean ± SEM and a Wilcoxon signed-rank test against the first model
(group.json, group.md, group_by_roi.png).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import alignment as al
import data_utils as du
import models
import voxel_selection as vs
from atomic_io import save_npz_atomic, to_json, write_json_atomic, write_text_atomic
from features import (FeatureCache, add_window_arguments, cache_settings, check_finite_features, check_window_fits,
                      extract_story_features_together, resolve_pooling, stride_note, stride_problem, window_problem)
from file_readers import not_downloaded_hint
from inference import inference_threads, sharing_plan
from ridge import SCORES
from timing import TEST_EXTRA_TRIM
from run_utils import (EXIT_DATA, EXIT_USAGE, NPY_READ_ERRORS, HelpFormatter, Stop, array_digest, code_identity,
                       command_line, compare_count_problem, exit_code, first_few, fraction, ignored_flags_problem,
                       model_run_usage_problem, nonnegative_int, out_among_inputs, output_dirs_problem,
                       package_versions, positive_int, remove_stale_outputs, resolve_device, resolve_precision,
                       run_claimed, set_seed, timestamp, writable_dir_problem)

PAPER_LAYERS = (2, 5, 7, 8, 10, 11, 12)
DATA_EFFICIENCY_REPEATS = 3  # draws of training stories per N of --data-efficiency


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, nargs="+",
                   help="result folder, one per --model-name (--compare, --subject-results: the one folder they write)")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="only compare earlier result folders (first = reference)")
    p.add_argument("--subject-results", action="append", nargs="+", metavar="DIR",
                   help="one subject's result folders, the models in the same order for every subject (first = "
                        "reference); give it once per subject: mean ± SEM across subjects and Wilcoxon tests")
    p.add_argument("--labels", nargs="+", help="model names, one per folder of --compare or of each --subject-results "
                                               "(default: the folder names, of the first subject's)")
    p.add_argument("--data-dir", help="ds003020 root (holds derivative/ and stimuli/)")
    p.add_argument("--subject", type=du.subject_arg, help="UTS03 or 3")
    p.add_argument("--model-name", nargs="+", help="hub id, local model dir, or a trainer's best/; several: "
                                                    "evaluated together, their shared bottom computed once")
    p.add_argument("--revision", default="main", help="hub branch, tag or commit of the --model-name hub ids (local "
                                                       "folders have one version)")
    p.add_argument("--layers", type=int, nargs="+", help="hidden-state indices (default: the paper's 2 5 7 8 10 11 12 "
                                                          "for 12 layers, at the same relative depth for deeper "
                                                          "models, all layers for fewer than 12)")
    p.add_argument("--train-stories", nargs="+", help="encoding-model training stories (default: the paper's 26)")
    p.add_argument("--test-story", default=du.TEST_STORY, help="held-out story the alignment is scored on")
    p.add_argument("--roi-file", help="JSON {roi: [voxel indices]}; 'all' is always reported")
    p.add_argument("--nc-dir", default=str(vs.DEFAULT_NC_DIR), help="noise ceilings (computed from repeats if absent)")
    p.add_argument("--nc-floor", type=fraction, default=0.1, help="cc_norm only where cc_max exceeds this")
    du.add_timing_arguments(p)
    add_window_arguments(p)
    p.add_argument("--whisper-mode", default="pad30", choices=models.WHISPER_MODES,
                   help=models.WINDOW_WHISPER_MODE_HELP)
    p.add_argument("--batch-size", type=positive_int,
                   help="windows per forward pass (default 16 on CUDA, 1 on CPU, where "
                        "batching saves no time and costs memory: bench/RESULTS.md)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--inference-threads", type=positive_int,
                   help="batches of windows run side by side, each op on one core (default: torch's CPU threads on "
                        "a CPU, 1 on a GPU; same features, 1.4x faster on 2 cores: bench/RESULTS.md)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="feature extraction: auto = bf16 autocast on CUDA, fp32 on CPU; bf16 on a CPU with native "
                        "bf16 (AVX512-BF16/AMX) is ~1.8x faster, cc_norm effect in bench/RESULTS.md")
    p.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch"],
                   help="ridge backend: auto = torch on the --device when it is a GPU, else numpy")
    p.add_argument("--ridge-score", default="r2", choices=SCORES,
                   help="alpha selection criterion, averaged over the bootstraps: r2 = 1 - SSres/SStot (the paper), "
                        "corr, or signed_sqrt_r2 = the public reference code's (Huth-lab bootstrap_ridge with "
                        "use_corr=False: sign(R2)*sqrt(|R2|), R2 from the residual's variance)")
    p.add_argument("--cache-dir", help="feature cache (default: $BRAIN_TUNING_CACHE/features, else ~/.cache/brain-tuning/features)")
    p.add_argument("--low-level", action="store_true", help="also run the low-level residual analysis (§4)")
    p.add_argument("--low-level-groups", nargs="+", choices=al.LOW_LEVEL_GROUPS, default=list(al.LOW_LEVEL_GROUPS),
                   help="low-level feature groups regressed out (default all, as §4 specifies; a subset shows which "
                        "groups carry the impact)")
    p.add_argument("--data-efficiency", type=positive_int, nargs="+", metavar="N",
                   help="also fit the upper-middle layers' encoding models on N randomly drawn training stories, for "
                        "each N (summary.json's data_efficiency, data_efficiency.png); --compare then gives the stories "
                        "each model needs to match the first model's full-data alignment")
    p.add_argument("--data-efficiency-repeats", type=positive_int,
                   help=f"draws of stories per N of --data-efficiency (the same draws for every model with this "
                        f"--seed; default {DATA_EFFICIENCY_REPEATS})")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the ridge bootstraps and the data-efficiency draws")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def resolve_layers(requested, n_layers: int) -> list[int]:
    if requested:
        bad = [l for l in requested if not 0 <= l <= n_layers]
        if bad:
            raise models.ModelError(f"--layers {bad} out of range: the model has hidden states 0..{n_layers}")
        return sorted(set(requested))
    if n_layers < 12:
        return list(range(1, n_layers + 1))
    # the paper's layers of its 12-layer models at the same relative depth: 24 layers -> 4 10 14 16 20 22 24, so a
    # deeper model is evaluated over its depth and its upper middle (12 < l <= 20) holds layers, not at 2..12 only
    return sorted({int(np.floor(l * n_layers / 12 + 0.5)) for l in PAPER_LAYERS})


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.labels and not (args.compare or args.subject_results):
        print("error: --labels names the models of --compare or --subject-results", file=sys.stderr)
        return EXIT_USAGE
    if args.compare or args.subject_results:
        flag = "--compare" if args.compare else "--subject-results"
        if args.compare and args.subject_results:
            print("error: give --compare or --subject-results, not both", file=sys.stderr)
            return EXIT_USAGE
        if len(args.out) != 1:
            print(f"error: {flag} writes one folder; found --out {' '.join(args.out)}", file=sys.stderr)
            return EXIT_USAGE
        if (problem := ignored_flags_problem(args, flag, ("data_dir", "subject", "model_name"))) is not None:
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_USAGE
        if args.compare and (problem := compare_count_problem(args.compare)):
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_USAGE
        inputs = args.compare or [d for group in args.subject_results for d in group]
        if (problem := out_among_inputs(args.out[0], inputs)) is not None:
            print(f"error: {flag}: {problem}", file=sys.stderr)
            return EXIT_USAGE
        # one writer at a time: two comparisons into one --out would leave one's table beside the other's plots
        return run_claimed(args.out, "brain_evaluate.py run", lambda: write_comparison(args))
    if (problem := model_run_usage_problem(args, ("data_dir", "subject", "model_name"))
            or window_problem(args.stride, args.context) or stride_problem(args.stride, args.tr)
            or vs.nc_dir_problem(args.nc_dir)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if note := stride_note(args.stride, args.tr):
        print(note, file=sys.stderr)
    # an earlier result: finished (summary.json), or killed with some layers written
    if (problem := output_dirs_problem(args.out, ("summary.json",), "brain_evaluate.py result",
                                       is_output=lambda folder: any(folder.glob("layer_*.npz")))) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # one evaluation at a time per --out (a second would mix its layers with this one's summary)
    return run_claimed(args.out, "brain_evaluate.py run", lambda: evaluate(args))


def write_comparison(args) -> int:
    """--compare or --subject-results into the one --out, once it is this process's; returns the exit code."""
    from compare_results import compare, compare_subjects
    try:
        if args.compare:
            compare([Path(d) for d in args.compare], Path(args.out[0]), args.labels)
        else:
            compare_subjects([[Path(d) for d in g] for g in args.subject_results], Path(args.out[0]), args.labels)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def evaluate(args) -> int:
    """The run of main() over --model-name, once every --out is this process's; returns the exit code."""
    return exit_code(lambda: _evaluate(args), out_of_memory=(
        f"lower --batch-size (windows per forward pass, now {args.batch_size or 16}): the same features up to "
        f"float rounding"))


def _evaluate(args) -> int:
    """The stages of an evaluation, top to bottom: request, data, models, features, encoding models; a refusal
    raises Stop (evaluate() prints it and returns its code)."""
    tunings = check_request(args)
    set_seed(args.seed)
    try:
        device = resolve_device(args.device)
        threads = inference_threads(args.inference_threads, device)
    except ValueError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    try:
        subject_data = load_subject_data(args)
    except (du.DataError, ValueError) as err:
        raise Stop(str(err), EXIT_DATA) from err
    data, train, test_story = subject_data["data"], subject_data["train"], args.test_story
    if skipped := subject_data["missing"]:  # only default stories are skipped (a --train-stories one is an error)
        print(f"note: {subject_data['subject']} has no responses for {len(skipped)} of the default training stories "
              f"({first_few(skipped)}); the encoding models are fitted on the other {len(train)} (config.json: "
              f"skipped_stories)", file=sys.stderr)
    if subject_data["nc_source"] == "computed from repeats":  # a --nc-dir typo would otherwise pass unseen
        print(f"note: no {vs.nc_path(subject_data['subject'], args.nc_dir)}: cc_max computed from the repeats of "
              f"'{test_story}' (every row, as compute_noise_ceiling.py does by default)", file=sys.stderr)
    elif note := vs.other_story_ceiling_note(subject_data["nc_source"], test_story, du.TEST_STORY):
        print(note, file=sys.stderr)  # a voxel's ceiling on one story, used as its ceiling on another
    for note in al.undefined_roi_notes(subject_data["rois"], subject_data["cc_max"], args.nc_floor):
        print(note, file=sys.stderr)  # before the work, not a bare "nan" in the table after it
    if args.data_efficiency:
        try:
            subject_data["efficiency_draws"] = al.story_subsets(train, sorted(set(args.data_efficiency)),
                                                                args.data_efficiency_repeats, args.seed)
        except ValueError as err:
            raise Stop(f"--data-efficiency: {err}", EXIT_USAGE) from err
    cache_root = Path(args.cache_dir) if args.cache_dir else data.cache_dir / "features"
    if problem := data.audio_cache_problem() or writable_dir_problem(cache_root, "the feature cache (--cache-dir)"):
        raise Stop(problem, EXIT_USAGE)
    encoders, layers = load_encoders(args)
    precision = resolve_precision(args.precision, device)
    settings = [cache_settings(args.stride, args.context, args.pooling, args.tr, precision, enc.model_type,
                               args.whisper_mode) for enc in encoders]
    caches = [FeatureCache(cache_root, name, st, args.revision) for name, st in zip(args.model_name, settings)]
    plan = sharing_plan(encoders)
    batch_size = args.batch_size or (16 if device.type == "cuda" else 1)

    # ---------------------------------------------------------------- features per model, story and layer
    per_layer = [{l: {} for l in ls} for ls in layers]  # model -> layer -> story -> (TRs, F)
    stories = train + [test_story]
    from tqdm import tqdm
    for story in tqdm(stories, desc="features", disable=args.no_progress):
        source = data.audio_fingerprint(story)  # features of another dataset's story of this name are not read
        found = [cache.load(story, ls, source=source) for cache, ls in zip(caches, layers)]
        todo = [k for k, f in enumerate(found) if f is None]
        groups = {}  # models with the same settings run together (the pooling differs between families)
        for k in todo:
            groups.setdefault(json.dumps(settings[k], sort_keys=True), []).append(k)
        try:  # the samples are read now (NaN or inf in them: exit 3); the stories before stay cached
            wav = data.audio(story) if groups else None
        except du.DataError as err:
            raise Stop(str(err), EXIT_DATA) from err
        for group in groups.values():
            st = settings[group[0]]
            times, feats = extract_story_features_together(
                [encoders[k] for k in group], wav, [layers[k] for k in group], args.stride,
                args.context, st["pooling"], args.tr, batch_size, device, precision, not args.no_progress, threads)
            for k, f in zip(group, feats):
                try:  # before the cache: a NaN layer is never read back as features
                    check_finite_features(f, layers[k], args.model_name[k], f"story '{story}'")
                except models.ModelError as err:
                    raise Stop(str(err), EXIT_USAGE) from err
                caches[k].save(story, layers[k], times, f, source=source)
                found[k] = (times, f)
        grid = data.tr_grid(story)
        for k, (times, feats) in enumerate(found):
            for li, l in enumerate(layers[k]):
                per_layer[k][l][story] = al.story_tr_features(times, feats[li], grid, test=story == test_story)
    n_layers = [enc.num_layers for enc in encoders]
    model_types = [enc.model_type for enc in encoders]
    del encoders  # the ridge fits below need the features only

    # ---------------------------------------------------------------- encoding models
    low = low_level_inputs(data, stories, test_story, args.low_level_groups) if args.low_level else None
    for k, (name, tuning) in enumerate(zip(args.model_name, tunings)):
        if tuning and tuning.get("subject") and subject_data["subject"] not in tuned_subjects(tuning):
            print(f"note: {name} was brain-tuned on {tuning['subject']}, evaluated on {subject_data['subject']} "
                  f"(cross-subject transfer)", file=sys.stderr)
        tuned_mode = (tuning or {}).get("whisper_mode")
        if note := models.whisper_mode_note(name, tuned_mode, model_types[k], args.whisper_mode):
            print(note, file=sys.stderr)
        shared = None if plan[k] is None else {"with": args.model_name[plan[k][0]], "blocks": plan[k][1]}
        resolved = {"skipped_stories": subject_data["missing"], "layers": layers[k],
                    "pooling": settings[k]["pooling"], "device": str(device), "precision": precision,
                    "ridge": ridge_backend(args.backend, device), "batch_size": batch_size, "inference_threads": threads,
                    "feature_cache": str(caches[k].folder), "feature_cache_hits": caches[k].hits,
                    "evaluated_with": [m for m in args.model_name if m != name], "shared_bottom": shared,
                    "brain_tuning": tuning}
        write_alignment(Path(args.out[k]), args, name, model_types[k], n_layers[k], per_layer[k], subject_data,
                        low, resolved)
    return 0


def check_request(args) -> list[dict | None]:
    """The `tuning_record` of each --model-name, once the request is one that can be answered: --low-level-groups
    only with --low-level (put in column order), --data-efficiency-repeats only with --data-efficiency (its
    default resolved there), and no tuned model scored on a story it was tuned or
    early-stopped on. Raises Stop (exit 2; exit 3 for a tuning record that does not read)."""
    args.low_level_groups = [g for g in al.LOW_LEVEL_GROUPS if g in args.low_level_groups]  # column order, once each
    if tuple(args.low_level_groups) != al.LOW_LEVEL_GROUPS and not args.low_level:
        raise Stop("--low-level-groups chooses the features of --low-level; add --low-level", EXIT_USAGE)
    if args.data_efficiency_repeats is not None and not args.data_efficiency:
        raise Stop("--data-efficiency-repeats sets the draws of --data-efficiency; add --data-efficiency", EXIT_USAGE)
    if args.data_efficiency and args.data_efficiency_repeats is None:
        args.data_efficiency_repeats = DATA_EFFICIENCY_REPEATS
    try:
        tunings = [tuning_record(name) for name in args.model_name]
    except du.DataError as err:
        raise Stop(str(err), EXIT_DATA) from err
    for name, tuning in zip(args.model_name, tunings):  # a tuned model has heard its training stories: scored on
        if which := tuned_on_story(tuning, args.test_story):  # one of them, it is not held out
            raise Stop(f"{name} was brain-tuned with '{args.test_story}' among its {which} stories, so its alignment "
                       f"on it would not be held out; evaluate on a story it was not tuned on (--test-story)",
                       EXIT_USAGE)
    return tunings


def load_encoders(args) -> tuple[list[models.SpeechEncoder], list[list[int]]]:
    """Each --model-name as a SpeechEncoder, with the hidden-state layers evaluated for it (--layers, else the
    paper's). Raises Stop (exit 2) for a model that does not load, a window it cannot take or a layer it lacks."""
    encoders, layers = [], []
    try:
        for name in args.model_name:
            backbone, extractor, model_type = models.load_backbone(name, revision=args.revision)
            encoders.append(models.SpeechEncoder(backbone, extractor, model_type, args.whisper_mode))
            check_window_fits(encoders[-1], args.stride, args.context)
            layers.append(resolve_layers(args.layers, encoders[-1].num_layers))
            if note := al.upper_middle_note(layers[-1], encoders[-1].num_layers, name):
                print(note, file=sys.stderr)
    except models.ModelError as err:
        raise Stop(str(err), EXIT_USAGE) from err
    return encoders, layers


def low_level_inputs(data, stories: list[str], test_story: str, groups: list[str]) -> dict[str, np.ndarray]:
    """story -> (TRs, F) low-level speech features (`groups` of al.LOW_LEVEL_GROUPS) on the story's TR grid, the
    test story trimmed as its responses are."""
    low = {}
    for story in stories:
        ph = data.phones(story)
        low[story] = al.low_level_features(data.audio(story), ph.labels, ph.midpoints, data.tr_grid(story),
                                           test=story == test_story, groups=groups)
    return low


def tuning_record(model_name: str) -> dict | None:
    """What brain_trainer_story.py wrote beside a tuned model (its best/brain_tuning.json): the subject or
    subjects it was tuned on, its base model (and the hub commit of it, None for a local folder or a record older
    than 2026-12-05), epoch and validation loss, and the stories it was tuned and
    early-stopped on and (Whisper) its --whisper-mode where recorded; None for any other model. Raises DataError naming a record that does not
    read or is not shaped as the trainer writes it: the held-out check could not be made."""
    path = Path(model_name) / "brain_tuning.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise du.DataError(f"{path}: unreadable ({err}), so the stories this model was tuned on cannot be checked "
                           f"against --test-story; restore it (or remove it to evaluate the model as untuned)") from err
    stories = record.get("stories", {}) if isinstance(record, dict) else None
    subject = record.get("subject") if isinstance(record, dict) else None

    def names(v) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if not (isinstance(stories, dict) and all(names(v) for v in stories.values())
            and (subject is None or isinstance(subject, str) or names(subject))):
        raise du.DataError(f"{path}: expected the record brain_trainer_story.py writes (a JSON object; 'subject' a "
                           f"name or a list of names; 'stories' {{'train': [names], 'val': [names]}}), found "
                           f"{json.dumps(record)[:200]}; restore it (or remove it to evaluate the model as untuned)")
    return ({k: record.get(k) for k in ("subject", "base_model", "base_model_revision", "epoch", "val_loss")}
            | ({"stories": stories} if "stories" in record else {})  # recorded since 2026-12-04
            | ({"whisper_mode": record["whisper_mode"]} if "whisper_mode" in record else {}))  # Whisper, 2026-12-07


def tuned_on_story(record: dict | None, story: str) -> str | None:
    """"training" or "validation" where a `tuning_record` lists `story` among the stories its model was tuned or
    early-stopped on (runs since 2026-12-04 record them), else None."""
    stories = (record or {}).get("stories") or {}
    for key, which in (("train", "training"), ("val", "validation")):
        if story in (stories.get(key) or []):
            return which
    return None


def tuned_subjects(record: dict) -> list[str]:
    """The subjects of a `tuning_record` as a list (a run on several subjects records a list, on one a string)."""
    subject = record.get("subject")
    return [subject] if isinstance(subject, str) else list(subject or [])


def load_subject_data(args) -> dict:
    """Stories, responses (train rows, test rows), noise ceiling and ROIs of `args.subject`; raises DataError."""
    subject = du.subject_id(args.subject)
    data = du.open_ds003020(args.data_dir, args.tr, args.trfiles)
    available = data.stories(subject)
    if args.train_stories:  # the default list holds every story; the test story is left out of it below
        du.check_story_lists(train=args.train_stories, test=[args.test_story])
    train = [s for s in (args.train_stories or du.ENCODING_TRAIN_STORIES) if s != args.test_story]
    missing = [s for s in train + [args.test_story] if s not in available]
    if args.test_story in missing:
        data.check_story_names([args.test_story], "--test-story")
        raise du.DataError(f"{data.response_path(subject, args.test_story)}: test story has no responses")
    if args.train_stories and missing:
        data.check_story_names(args.train_stories, "--train-stories")
        raise du.DataError(f"{data.response_path(subject, missing[0]).parent}: {subject} has no responses for "
                           f"{missing} (has {len(available)} stories)")
    train = [s for s in train if s in available]
    if not train:
        raise du.DataError(f"{subject}: none of the training stories has responses (available {sorted(available)})")
    if absent := data.missing_stimuli(train + [args.test_story], textgrids=args.low_level):
        raise du.DataError(f"stimuli missing ({len(absent)}): {first_few(absent, 4)}"
                           f"{not_downloaded_hint(absent[0])}")
    for story in train + [args.test_story]:  # a truncated file is found now, not after hours of extraction
        data.check_audio(story)
        if args.low_level:  # so is a TextGrid that does not parse (raises TextGridError, a ValueError)
            data.phones(story)
    n_vox = data.n_voxels(subject)
    nc_file = vs.nc_path(subject, args.nc_dir)
    if nc_file.is_file():
        cc_max, nc_source = vs.load_noise_ceiling(subject, n_vox, nc_dir=args.nc_dir), str(nc_file)
    else:
        from compute_noise_ceiling import subject_noise_ceiling
        try:
            cc_max, nc_source = subject_noise_ceiling(data, subject, args.test_story), "computed from repeats"
        except du.DataError as err:  # a test story heard once: the ceiling can only come from a file
            if args.test_story == du.TEST_STORY:
                raise
            raise du.DataError(f"{err}: --test-story {args.test_story} has no repeats to compute cc_max from, and "
                               f"there is no {nc_file}; give --nc-dir a folder holding {subject}.npy (computed from "
                               f"the {du.TEST_STORY} repeats by compute_noise_ceiling.py)") from err
    rois = {"all": np.arange(n_vox)}
    if args.roi_file:
        named = vs.load_roi_file(args.roi_file, n_vox, subject=subject)
        if "all" in named:  # it would replace the every-voxel summary under the same name
            raise du.DataError(f"{args.roi_file}: the ROI name 'all' is reserved for every voxel; rename that ROI")
        rois.update(named)
    y_train = np.vstack([data.load_responses(subject, s) for s in train])
    y_test = data.load_responses(subject, args.test_story)
    if len(y_test) < TEST_EXTRA_TRIM + 2:  # a correlation over the scored rows needs two of them
        raise du.DataError(f"{data.response_path(subject, args.test_story)}: {len(y_test)} rows, but the held-out story is "
                           f"scored from row {TEST_EXTRA_TRIM} on (data[{TEST_EXTRA_TRIM}:]): expected at least "
                           f"{TEST_EXTRA_TRIM + 2} rows; choose a longer --test-story")
    y_test = y_test[TEST_EXTRA_TRIM:]  # data[40:] <-> TR grid [50:-5]
    # what every layer's fit reads besides its features: a layer result with the same inputs is read back
    inputs = array_digest(y_train, y_test, cc_max, train, args.test_story, *[x for r in sorted(rois) for x in (r, rois[r])])
    return {"subject": subject, "data": data, "timing": data.timing_record(), "train": train, "missing": missing, "cc_max": cc_max,
            "nc_source": nc_source, "nc_digest": array_digest(np.asarray(cc_max, np.float64)), "rois": rois,
            "roi_digests": {r: array_digest(np.asarray(v, np.int64)) for r, v in rois.items()},
            "y_train": y_train, "y_test": y_test, "inputs_digest": inputs}


# the code a layer's fit runs after its features: a change to it makes earlier layer results stale
FIT_CODE = ("alignment.py", "ridge.py", "eval_utils.py", "brain_evaluate.py")


def layer_fit_key(features: list[np.ndarray], inputs_digest: str, low: list[np.ndarray] | None, settings: dict) -> str:
    """Identity of one layer's encoding-model fit: its (TRs, F) features per story, the subject's responses, noise
    ceiling and ROIs (`inputs_digest`), the low-level features, the fit settings, the fitting code and the numeric
    packages. Equal keys give equal results, so a rerun after a kill reads finished layers back."""
    return array_digest(inputs_digest, settings, code_identity(FIT_CODE), *features, *(low or []))


def read_layer_entry(path: Path, key: str) -> dict | None:
    """The summary entry stored in a layer_<l>.npz written by a fit with this key, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "fit_key" not in z.files or str(z["fit_key"]) != key:
                return None
            return json.loads(str(z["summary_entry"]))
    except NPY_READ_ERRORS:  # absent or unreadable: fitted again
        return None


def data_efficiency(per_layer: dict[int, dict[str, np.ndarray]], layers: list[int], subject_data: dict, args,
                    ridge_kwargs: dict) -> dict:
    """The upper-middle layers' encoding models refitted on each draw of `subject_data["efficiency_draws"]`:
    per draw the ROI mean cc_norm (mean over `layers`), and per count the mean and SD over its draws."""
    from tqdm import tqdm
    train, rois = subject_data["train"], subject_data["rois"]
    rows = np.cumsum([len(per_layer[layers[0]][s]) for s in train])
    if rows[-1] != len(subject_data["y_train"]):
        raise RuntimeError(f"{len(subject_data['y_train'])} training response rows, {rows[-1]} feature rows")
    y_by_story = dict(zip(train, np.split(subject_data["y_train"], rows[:-1])))
    draws = []
    for n, stories in tqdm(subject_data["efficiency_draws"], desc="data efficiency", disable=args.no_progress):
        per_layer_rois = [al.subset_alignment(per_layer[l], y_by_story, stories, args.test_story, subject_data["y_test"],
                                              subject_data["cc_max"], rois, args.nc_floor, ridge_kwargs) for l in layers]
        draws.append({"n": n, "stories": stories,
                      "rois": {r: al.mean_defined([v[r] for v in per_layer_rois]) for r in rois}})
    counts = sorted({d["n"] for d in draws})
    at = {n: [d["rois"] for d in draws if d["n"] == n] for n in counts}
    return {"counts": counts, "repeats": args.data_efficiency_repeats, "seed": args.seed, "layers": layers,
            "n_train_stories": len(train), "draws": draws,
            "mean": {r: [float(np.mean([v[r] for v in at[n]])) for n in counts] for r in rois},
            "sd": {r: [float(np.std([v[r] for v in at[n]])) for n in counts] for r in rois}}


def grid_name(alphas: np.ndarray) -> str:
    """A log-spaced alpha grid as its numpy call, e.g. "logspace(1, 4, 15)", for config.json."""
    return f"logspace({np.log10(alphas[0]):g}, {np.log10(alphas[-1]):g}, {len(alphas)})"


def ridge_backend(choice: str, device) -> dict:
    """The --backend flag resolved: {"backend", "device"} for ridge.bootstrap_ridge (auto: torch on a GPU)."""
    if choice == "auto":
        choice = "torch" if device.type == "cuda" else "numpy"
    return {"backend": choice, "device": str(device) if choice == "torch" else None}


def fit_layer(features: dict[str, np.ndarray], low: dict[str, np.ndarray] | None, subject_data: dict, args,
              ridge_kwargs: dict, keep_voxels: np.ndarray | None) -> tuple[dict, dict[str, np.ndarray]]:
    """One layer's encoding model on the held-out story, and with `low` the model of the layer's features with the
    low-level features regressed out (§4).

    features, low : story -> (TRs, F); keep_voxels : voxels whose (test TRs,) predictions are kept, or None.
    Returns (summary entry: ROI means, alpha edge fraction, low-level impact; arrays of layer_<l>.npz).
    """
    train, test_story = subject_data["train"], args.test_story
    cc_max, rois = subject_data["cc_max"], subject_data["rois"]
    y_train, y_test = subject_data["y_train"], subject_data["y_test"]
    x_train, x_test = al.stack_design(features, train, test_story)
    res = al.fit_and_score(x_train, y_train, x_test, y_test, cc_max, args.nc_floor, ridge_kwargs=ridge_kwargs)
    entry = {"rois": al.roi_summary(res, rois), "alpha_edge_fraction": res["edge_fraction"]}
    arrays = {"r": res["r"], "cc_max": cc_max, "cc_norm": res["cc_norm"], "alphas": res["alphas"]}
    if low is not None:
        r_train, r_test = al.residualize(np.vstack([features[s] for s in train]), features[test_story],
                                         np.vstack([low[s] for s in train]), low[test_story], ridge_kwargs)
        xr_train, xr_test = al.stack_design({"train": r_train, "test": r_test}, ["train"], "test")
        res_low = al.fit_and_score(xr_train, y_train, xr_test, y_test, cc_max, args.nc_floor, ridge_kwargs=ridge_kwargs)
        entry["rois_residual"] = al.roi_summary(res_low, rois)
        entry["low_level_impact"] = {roi: al.low_level_impact(entry["rois"][roi]["cc_norm"],
                                                              entry["rois_residual"][roi]["cc_norm"]) for roi in rois}
        arrays["cc_norm_residual"] = res_low["cc_norm"]
    if keep_voxels is not None:
        arrays.update(roi_voxels=keep_voxels,
                      test_predictions_roi=res["predictions"][:, keep_voxels].astype(np.float32))
        if low is not None:  # for --compare's intervals of the low-level impact
            arrays["test_predictions_roi_residual"] = res_low["predictions"][:, keep_voxels].astype(np.float32)
    return entry, arrays


def tr_grids_label(timing: dict) -> str:
    """The TR grids of a `Ds003020.timing_record()` in a line that two evaluations share when their grids are the
    same: the trfiles pickle's SHA-256 (wherever it lies), else the TR the grids were simulated with."""
    if "trfiles_sha256" in timing:
        return f"trfiles sha256 {timing['trfiles_sha256'][:16]}"
    return f"simulated, TR {timing['tr']} s"


def write_alignment(out: Path, args, model_name: str, model_type: str, n_layers: int,
                    per_layer: dict[int, dict[str, np.ndarray]], subject_data: dict, low: dict | None,
                    resolved: dict) -> None:
    """Fit the encoding model of each layer, write layer_<l>.npz, summary.json, config.json, table.md and the plot.

    per_layer : layer -> story -> (TRs, F) features; low : story -> (TRs, F) low-level features or None.
    """
    train, test_story = subject_data["train"], args.test_story
    cc_max, rois, y_test = subject_data["cc_max"], subject_data["rois"], subject_data["y_test"]
    layers = sorted(per_layer)
    ridge_kwargs = {**resolved["ridge"], "score": args.ridge_score, "seed": args.seed}
    summary = {"subject": subject_data["subject"], "model": model_name, "model_type": model_type, "layers": layers,
               "n_layers": n_layers, "upper_middle_layers": al.upper_middle_layers(layers, n_layers),
               "per_layer": {}, "nc_floor": args.nc_floor, "ridge_score": args.ridge_score, "test_story": test_story,
               "train_stories": train, "noise_ceiling_digest": subject_data["nc_digest"],  # --compare: one ceiling,
               "roi_digests": subject_data["roi_digests"],  # ROIs of one name on the same voxels
               # and one feature sampling: window stride and context, and the TR grids features are resampled to
               "stride": args.stride, "context": args.context, "tr_grids": tr_grids_label(subject_data["timing"]),
               # and, within a model family, one way of reading the hidden states out (as the feature cache keys it)
               "pooling": resolve_pooling(args.pooling, model_type),
               "whisper_mode": args.whisper_mode if model_type == "whisper" else None,
               # --subject-results says where a subject's row is another subject's tuned model (None: not tuned)
               "tuned_subjects": tuned_subjects(resolved["brain_tuning"]) if resolved["brain_tuning"] else None}
    named = [r for r in rois if r != "all"]  # test predictions of their voxels are kept for --compare's bootstrap
    roi_voxels = np.unique(np.concatenate([rois[r] for r in named])).astype(np.int64) if named else None
    out.mkdir(parents=True, exist_ok=True)
    # summary.json marks a finished result (--compare reads it): gone until this one is complete, written last
    (out / "summary.json").unlink(missing_ok=True)
    from tqdm import tqdm
    fit_settings = {"ridge": ridge_kwargs, "nc_floor": args.nc_floor, "delays": list(al.DEFAULT_DELAYS),
                    "low_level_groups": list(args.low_level_groups) if low is not None else None,
                    "upper_middle": summary["upper_middle_layers"], "roi_voxels": named}
    low_parts = None if low is None else [low[s] for s in train + [test_story]]
    resolved["layers_reused"] = []
    for l in tqdm(layers, desc="encoding models", disable=args.no_progress):
        key = layer_fit_key([per_layer[l][s] for s in train + [test_story]], subject_data["inputs_digest"], low_parts,
                            {**fit_settings, "layer": l})
        if (done := read_layer_entry(out / f"layer_{l}.npz", key)) is not None:
            summary["per_layer"][str(l)] = done  # finished before a kill, same inputs: read back, not refitted
            resolved["layers_reused"].append(l)
            continue
        keep = roi_voxels if l in summary["upper_middle_layers"] else None
        entry, arrays = fit_layer(per_layer[l], low, subject_data, args, ridge_kwargs, keep)
        save_npz_atomic(out / f"layer_{l}.npz", **arrays, fit_key=np.array(key),
                        summary_entry=np.array(to_json(entry)))
        summary["per_layer"][str(l)] = entry
    if resolved["layers_reused"]:
        print(f"note: {out}: layer(s) {resolved['layers_reused']} read back from an earlier run with the same inputs, "
              "not refitted", file=sys.stderr)
    if roi_voxels is not None:
        save_npz_atomic(out / "test_responses_roi.npz", roi_voxels=roi_voxels, cc_max=cc_max[roi_voxels],
                        responses=y_test[:, roi_voxels].astype(np.float32),
                        **{f"roi/{r}": np.searchsorted(roi_voxels, rois[r]) for r in named})
    um = [str(l) for l in summary["upper_middle_layers"]]
    summary["upper_middle_mean"] = {roi: al.mean_defined([summary["per_layer"][l]["rois"][roi]["cc_norm"] for l in um])
                                    for roi in rois}
    if "efficiency_draws" in subject_data:
        summary["data_efficiency"] = data_efficiency(per_layer, summary["upper_middle_layers"], subject_data, args,
                                                     ridge_kwargs)
    residual_ridge = {"score": al.RESIDUAL_SCORE, "alphas": grid_name(al.RESIDUAL_ALPHAS)}  # --low-level residuals
    if low is not None:
        summary["low_level_groups"] = list(args.low_level_groups)
        summary["low_level_residual_model"] = "{score} over {alphas}".format(**residual_ridge)
        summary["upper_middle_low_level_impact"] = {
            roi: float(al.upper_middle_impact([summary["per_layer"][l]["low_level_impact"][roi] for l in um]))
            for roi in rois}
    write_json_atomic(out / "config.json", {"args": {**vars(args), "model_name": model_name, "out": str(out)},
                                            "resolved": {"model_revision": models.hub_revision(model_name, args.revision),
                                                         "train_stories": train, **resolved,
                                                         "noise_ceiling": subject_data["nc_source"],
                                                         "timing": subject_data["timing"],
                                                         "ridge": {**ridge_kwargs, "penalty": "alpha^2 (Huth)",
                                                                   "alphas": grid_name(al.DEFAULT_ALPHAS)},
                                                         **({"residual_ridge": residual_ridge} if low is not None
                                                            else {})},
                                            "command": command_line(), "finished": timestamp(),
                                            "versions": package_versions()})
    from compare_results import render_single
    from plotting import plot_layer_curves
    table = render_single(summary)
    write_text_atomic(out / "table.md", table)
    curves = {roi: {Path(model_name).name: [summary["per_layer"][str(l)]["rois"][roi]["cc_norm"] for l in layers]}
              for roi in rois}
    plot_layer_curves(curves, layers, out / "alignment_by_layer.png", "mean cc_norm", title=subject_data["subject"],
                      highlight=summary["upper_middle_layers"])
    if "data_efficiency" in summary:
        eff = summary["data_efficiency"]
        from compare_results import efficiency_curve
        counts, means = efficiency_curve(eff, summary["upper_middle_mean"])
        plot_layer_curves({roi: {Path(model_name).name: means[roi]} for roi in rois}, counts,
                          out / "data_efficiency.png", "mean cc_norm (upper-middle layers)",
                          title=subject_data["subject"], xlabel="encoding-model training stories", log_x=True)
    # an earlier result in this folder (other layers, ROIs, data efficiency) leaves nothing this one did not write
    written = {f"layer_{l}.npz" for l in layers}
    written |= {"test_responses_roi.npz"} if roi_voxels is not None else set()
    written |= {"data_efficiency.png"} if "data_efficiency" in summary else set()
    remove_stale_outputs(out, ("layer_*.npz", "test_responses_roi.npz", "data_efficiency.png"), written)
    write_json_atomic(out / "summary.json", summary)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
