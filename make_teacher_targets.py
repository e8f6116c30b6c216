"""Write a teacher's TR-aligned features per story for the teacher-tuned controls (--targets-from of the trainer).

    # "BigSLM-tuned": a layer of a larger speech model, extracted as the alignment evaluation extracts features
    python make_teacher_targets.py --data-dir /path/to/ds003020 --model-name openai/whisper-medium --layer 18 \
        --out teachers/whisper-medium_L18.npz
    # "LM-tuned": a layer of a text language model, each word read with the 20 words before it
    python make_teacher_targets.py --data-dir /path/to/ds003020 --text-model gpt2 --layer 9 \
        --out teachers/gpt2_L9.npz
    # or the dataset's own word embedding (Huth et al. 2016): no model needed
    python make_teacher_targets.py --data-dir /path/to/ds003020 --word-embedding english1000 \
        --out teachers/english1000.npz
    python brain_trainer_story.py ... --targets-from teachers/english1000.npz

The .npz maps each story to (respdict − 20, F) float32: the teacher's vectors Lanczos-downsampled to the story's
TR grid, rows `[10:-5]` (one per hf5 response row, for every subject), z-scored per story like the responses.
Beside it, `<out>.json` records the settings, per-story counts and package versions. Default stories: the
brain-tuning split's 27 that the dataset has (`--stories` to choose). Exit codes: 2 usage, 3 data, 6 a write failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

import data_utils as du
import models
import teacher_targets as tt
from atomic_io import WriteError, save_npz_atomic, write_json_atomic, write_together
from features import (FeatureCache, add_window_arguments, cache_settings, check_window_fits, stride_note,
                      stride_problem, window_problem)
from inference import inference_threads
from run_utils import (EXIT_DATA, EXIT_USAGE, EXIT_WRITE, HelpFormatter, command_line, creatable_problem, exit_code,
                       nonnegative_int, package_versions, positive_int, resolve_device, resolve_precision,
                       revision_problem, timestamp, writable_dir_problem)

BRAIN_TUNING_STORIES = du.TRAIN_STORIES + du.VAL_STORIES + (du.TEST_STORY,)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, help="ds003020 root (holds derivative/ and stimuli/)")
    p.add_argument("--out", required=True, help="the .npz to write (story -> (rows, F)); <out>.json beside it")
    teacher = p.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--model-name", help="speech teacher: hub id or local model dir")
    teacher.add_argument("--text-model", help="text teacher: hub id or local dir of a language model and its tokenizer")
    teacher.add_argument("--word-embedding", help="word teacher: a Huth-lab .hf5 ('data' (dims, words), 'vocab'); "
                                                  "'english1000' = the dataset's derivative/english1000sm.hf5")
    p.add_argument("--revision", default="main", help="hub branch, tag or commit of a --model-name or --text-model hub "
                                                       "id (a local folder has one version)")
    p.add_argument("--layer", type=nonnegative_int,
                   help="speech or text teacher: hidden-state index (0 = transformer input)")
    p.add_argument("--context-words", type=nonnegative_int, default=20,
                   help="text teacher: words read before each word")
    p.add_argument("--stories", nargs="+", help="stories to write (default: the brain-tuning split's 27 present)")
    du.add_timing_arguments(p)
    g = p.add_argument_group("speech teacher (the alignment evaluation's feature settings)")
    add_window_arguments(g)
    g.add_argument("--whisper-mode", default="pad30", choices=models.WHISPER_MODES,
                   help=models.WINDOW_WHISPER_MODE_HELP)
    g.add_argument("--batch-size", type=positive_int,
                   help="windows per forward pass (default 16 on CUDA, 1 on CPU); text "
                        "teacher: words per forward pass (default 32)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (speech and text teachers)")
    g.add_argument("--inference-threads", type=positive_int,
                   help="batches side by side on a CPU (see brain_evaluate.py)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto = bf16 autocast on CUDA, fp32 on CPU")
    g.add_argument("--cache-dir", help="feature cache shared with brain_evaluate.py (default: its default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def usage_problem(args) -> str | None:
    """Why the flags do not make a run (the message for exit 2), else None."""
    if not args.out.endswith(".npz"):
        return f"--out must name a .npz file, found {args.out!r}"
    model_flag = "--model-name" if args.model_name else "--text-model" if args.text_model else None
    if model_flag and args.layer is None:
        return f"{model_flag} needs --layer (the teacher's hidden-state index)"
    if args.word_embedding and args.layer is not None:
        return "--layer chooses a model teacher's layer; --word-embedding has none"
    parser = build_parser()  # flags whose defaults are values are given where they differ from them

    def given(dests: tuple[str, ...]) -> list[str]:
        return [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d) != parser.get_default(d)]
    speech_only = given(("cache_dir", "inference_threads", "stride", "context", "pooling", "whisper_mode", "precision"))
    if not args.model_name and speech_only:
        return f"{', '.join(speech_only)} appl{'ies' if len(speech_only) == 1 else 'y'} to a speech teacher (--model-name)"
    if not args.text_model and given(("context_words",)):
        return "--context-words applies to a text teacher (--text-model)"
    if args.word_embedding and (model_only := given(("batch_size", "device"))):
        return f"{', '.join(model_only)} appl{'ies' if len(model_only) == 1 else 'y'} to a model teacher; --word-embedding runs none"
    if args.word_embedding and args.revision != "main":
        return "--revision chooses a model teacher's hub revision; --word-embedding reads a file"
    if args.model_name and (problem := window_problem(args.stride, args.context) or stride_problem(args.stride,
                                                                                                   args.tr)):
        return problem
    return revision_problem([args.model_name or args.text_model], args.revision) if model_flag else None


def choose_stories(data: du.Ds003020, requested: list[str] | None) -> tuple[list[str], list[str]]:
    """(stories to write, default stories the dataset lacks); a requested story without audio is a DataError."""
    have = {s for s in data.respdict if data.audio_path(s).is_file()}
    if requested:
        data.check_story_names(requested, "--stories")  # a typo: named with the closest story
        if missing := [s for s in requested if s not in have]:
            raise du.DataError(f"{data.root}: no respdict entry and audio for {missing}")
        return list(requested), []
    stories = [s for s in BRAIN_TUNING_STORIES if s in have]
    if not stories:
        raise du.DataError(f"{data.root}: none of the brain-tuning stories has a respdict entry and audio")
    return stories, [s for s in BRAIN_TUNING_STORIES if s not in have]


def check_layer(layer: int, n_layers: int, model_name: str) -> None:
    """Raise ModelError unless `layer` is a hidden-state index of the model (0..n_layers)."""
    if not 0 <= layer <= n_layers:
        raise models.ModelError(f"--layer {layer} out of range: {model_name} has hidden states 0..{n_layers}")


def word_embedding_teacher(args, data: du.Ds003020, stories: list[str]) -> tuple[dict, dict, dict]:
    """(targets, per-story record, teacher record) of --word-embedding."""
    path = data.derivative / "english1000sm.hf5" if args.word_embedding == "english1000" else Path(args.word_embedding)
    if args.word_embedding == "english1000" and not path.is_file():
        raise du.DataError(f"{path}: word embedding file missing (--word-embedding english1000 reads it from the "
                           f"dataset's derivative/; the Huth lab's deep-fMRI-dataset repository keeps it as "
                           f"em_data/english1000sm.hf5: give that file's path to --word-embedding)")
    index, embedding = tt.read_word_embedding(path)
    targets, per_story = {}, {}
    for story in tqdm(stories, desc="stories", disable=args.no_progress):
        targets[story], per_story[story] = tt.word_embedding_targets(data, story, index, embedding)
    return targets, per_story, {"kind": "word_embedding", "file": str(path), "vocabulary": len(index),
                                "dims": embedding.shape[1], "out_of_vocabulary": "zeros"}


def text_model_teacher(args, data: du.Ds003020, stories: list[str]) -> tuple[dict, dict, dict]:
    """(targets, per-story record, teacher record) of --text-model."""
    device = resolve_device(args.device)
    tokenizer, lm = tt.load_text_model(args.text_model, device, args.revision)
    check_layer(args.layer, lm.config.num_hidden_layers, args.text_model)
    batch_size = args.batch_size or 32
    targets, per_story = {}, {}
    for story in tqdm(stories, desc="stories", disable=args.no_progress):
        targets[story], per_story[story] = tt.text_model_targets(data, story, tokenizer, lm, args.layer,
                                                                 args.context_words, batch_size, device,
                                                                 not args.no_progress)
    return targets, per_story, {"kind": "text_model", "model": args.text_model,
                                "model_revision": models.hub_revision(args.text_model, args.revision),
                                "model_type": lm.config.model_type,
                                "layer": args.layer, "dims": lm.config.hidden_size, "context_words": args.context_words,
                                "token": "the word's last token", "non_lexical_labels": "zeros", "case": "lower",
                                "batch_size": batch_size, "device": str(device)}


def speech_model_teacher(args, data: du.Ds003020, stories: list[str]) -> tuple[dict, dict, dict]:
    """(targets, per-story record, teacher record) of --model-name, through the evaluation's feature cache."""
    cache_root = Path(args.cache_dir) if args.cache_dir else data.cache_dir / "features"
    if problem := data.audio_cache_problem() or writable_dir_problem(cache_root, "the feature cache (--cache-dir)"):
        raise ValueError(problem)  # a usage error, before the model is loaded
    if note := stride_note(args.stride, args.tr):
        print(note, file=sys.stderr)
    device = resolve_device(args.device)
    threads = inference_threads(args.inference_threads, device)
    backbone, extractor, model_type = models.load_backbone(args.model_name, revision=args.revision)
    encoder = models.SpeechEncoder(backbone, extractor, model_type, args.whisper_mode)
    if note := models.whisper_mode_note(args.model_name, None, model_type, args.whisper_mode):
        print(note, file=sys.stderr)
    check_layer(args.layer, encoder.num_layers, args.model_name)
    check_window_fits(encoder, args.stride, args.context)
    precision = resolve_precision(args.precision, device)
    settings = cache_settings(args.stride, args.context, args.pooling, args.tr, precision, model_type, args.whisper_mode)
    cache = FeatureCache(cache_root, args.model_name, settings, args.revision)
    batch_size = args.batch_size or (16 if device.type == "cuda" else 1)
    targets = {story: tt.speech_layer_targets(data, story, encoder, args.layer, cache, args.stride, args.context,
                                              settings["pooling"], batch_size, device, precision,
                                              not args.no_progress, threads)
               for story in tqdm(stories, desc="stories", disable=args.no_progress)}
    return targets, {s: {} for s in stories}, {
        "kind": "speech_model", "model": args.model_name,
        "model_revision": models.hub_revision(args.model_name, args.revision),
        "model_type": model_type, "layer": args.layer,
        "dims": encoder.hidden_size, **settings, "batch_size": batch_size, "device": str(device),
        "inference_threads": threads, "feature_cache": str(cache.folder), "feature_cache_hits": cache.hits}


def write_targets(out: Path, targets: dict, record: dict) -> None:
    """The targets `out` (.npz, story -> (rows, F)) and their record `<out>.json`, which the trainer reads beside
    them: both written under temporary names first, then renamed, so that a full disk (WriteError) leaves an
    earlier pair as it was, never a new .npz beside the record of other targets."""
    write_together({out: lambda path: save_npz_atomic(path, **targets),
                    out.with_name(out.name + ".json"): lambda path: write_json_atomic(path, record)})


def main(argv=None) -> int:
    args = parse_args(argv)
    if (problem := usage_problem(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    if out.exists() and not out.with_name(out.name + ".json").is_file():  # an .npz this script did not write
        print(f"error: {out} exists and has no {out.name}.json beside it, so it is not an earlier output of "
              f"make_teacher_targets.py; refusing to overwrite it: choose another --out or remove it", file=sys.stderr)
        return EXIT_USAGE
    if (problem := creatable_problem(out, "--out")) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return exit_code(lambda: make_targets(args, out))  # Ctrl-C, SIGTERM: a line and their exit codes


def make_targets(args, out: Path) -> int:
    """The run of main() once its flags are checked: the teacher's targets of every story, written to `out`."""
    make = (word_embedding_teacher if args.word_embedding else text_model_teacher if args.text_model
            else speech_model_teacher)
    try:
        data = du.open_ds003020(args.data_dir, args.tr, args.trfiles)
        stories, skipped = choose_stories(data, args.stories)
        if skipped:
            print(f"note: the dataset lacks {len(skipped)} of the brain-tuning stories: {', '.join(skipped)}",
                  file=sys.stderr)
        targets, per_story, teacher = make(args, data, stories)
        for story, t in targets.items():
            per_story[story]["rows"] = int(t.shape[0])
        write_targets(out, targets, {
            "args": vars(args), "resolved": {"teacher": teacher, "stories": per_story, "skipped_stories": skipped,
                                             "tr": args.tr, "timing": data.timing_record(),
                                             "rows": "TR grid [10:-5] (= hf5 rows), z-scored per story"},
            "command": command_line(), "finished": timestamp(), "versions": package_versions()})
    except du.DATA_ERRORS as err:  # a file missing, unreadable, wrong shape
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA
    except (models.ModelError, ValueError) as err:  # a model that cannot be loaded or used as asked
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as err:  # a full disk or quota: the feature cache or the targets
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WRITE
    n_feat = next(iter(targets.values())).shape[1]
    print(f"wrote {out}: {len(targets)} stories x {n_feat} features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
