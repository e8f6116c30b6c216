"""Probe a frozen speech model on the paper's other downstream tasks, and measure its semantic preference.

    python eval_downstream.py --task commands --data-dir /data/speech_commands_v0.02 --model-name M --out R
    python eval_downstream.py --task emotion  --data-dir /data/CREMA-D --model-name M --out R
    python eval_downstream.py --task intent   --data-dir /data/slurp --model-name M --out R   # or --task action
    python eval_downstream.py --task semantic_preference --data-dir /data/ds003020 --model-name M --out R \
        [--pairs downstream/semantic_pairs_en.tsv]   # word segments from the stories' TextGrids
    python eval_downstream.py --task semantic_preference --corpus timit --data-dir /data/TIMIT ...  # .WRD segments
    python eval_downstream.py --task story_word_category --data-dir /data/ds003020 --word-labels W.tsv \
        --model-name M --out R   # a word label (TSV word/label) of story words in context, CV by word
    python eval_downstream.py --task story_word_category --corpus aligned --data-dir DIR ...  # <name>.wav+.TextGrid
    python eval_downstream.py --task emotion ... --model-name M_pre M_tuned --out R_pre R_tuned  # several models
    python eval_downstream.py --compare R_pre R_tuned --out R_cmp

semantic_category is the miniature's word task (data/downstream/words). Probes are chosen on the validation
split (SLURP devel, Speech Commands validation_list, held-out CREMA-D actors) and scored once on test.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import data_utils as du
from probe_cli import common_parser, run, side_by_side, task_flags_problem
from probe_tasks import read_word_labels, run_probe_task, run_semantic_preference, run_story_word_probe
from run_utils import EXIT_USAGE, nonnegative_float, number_type, positive_int, resolve_precision
from semantic_preference import ENGLISH_PAIRS, read_pairs

PROBE_TASKS = ["commands", "emotion", "intent", "action", "semantic_category"]


def story_words(args) -> tuple[dict, Callable]:
    """Word segments {source: [(start_s, end_s, word)]} and an audio loader: ds003020 TextGrids, TIMIT .WRD files
    or an aligned folder (<name>.wav + <name>.TextGrid)."""
    import downstream_data as dd
    if args.corpus == "ds003020":
        data = du.Ds003020(args.data_dir)
        stories = args.stories or sorted(data.respdict)
        words_by_source = {}
        for s in stories:
            data.check_audio(s)  # a truncated story is named now, from its header, not mid-extraction
            w = data.words(s)
            words_by_source[s] = list(zip(w.starts.tolist(), w.ends.tolist(), w.labels))
        return words_by_source, data.audio
    if args.corpus == "aligned":
        return dd.read_aligned_words(args.data_dir), lambda src: dd.load_wav_16k(Path(src))
    utts = dd.read_timit(args.data_dir)
    return {str(u.path): u.words for u in utts}, lambda src: dd.load_wav_16k(Path(src))


def semantic_preference_task(args, probed, device):
    words_by_source, loader = story_words(args)
    run_semantic_preference(probed, words_by_source, loader, args.pairs or ENGLISH_PAIRS, args.context,
                            args.max_per_word, device, args.seed, not args.no_progress, config=vars(args),
                            threads=args.inference_threads)


def story_word_task(args, probed, device):
    words_by_source, loader = story_words(args)
    run_story_word_probe(probed, words_by_source, loader, args.word_labels, args.context, args.max_per_word,
                         args.folds, device, args.seed, not args.no_progress, config=vars(args),
                         threads=args.inference_threads, side_by_side=side_by_side(args))


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0], PROBE_TASKS + ["semantic_preference", "story_word_category"],
                           "dataset root in its public layout (see README)")
    g = parser.add_argument_group("word segments of stories (semantic_preference, story_word_category)")
    g.add_argument("--pairs", help="TSV word1/word2/relation (default: the shipped English list)")
    g.add_argument("--corpus", choices=["ds003020", "timit", "aligned"],
                   help="where word segments come from (default ds003020; aligned: a folder of <name>.wav + "
                        "<name>.TextGrid)")
    g.add_argument("--stories", nargs="+", help="ds003020 stories to take words from (default: all)")
    g.add_argument("--context", type=nonnegative_float,
                   help="seconds of audio before each word given to the model (default 3)")
    g.add_argument("--max-per-word", type=positive_int,
                   help="occurrences used per word (default 10; story_word_category 5)")
    g.add_argument("--word-labels", help="story_word_category: TSV word/label (e.g. a semantic category per word)")
    g.add_argument("--folds", type=number_type(int, lambda v: v >= 3, "an integer >= 3"),
                   help="story_word_category: folds of held-out words (default 6; each fold scored, the next one "
                        "choosing the probe, the rest training it: at least 3)")
    args = parser.parse_args(argv)
    word_tasks = ("semantic_preference", "story_word_category")
    if problem := task_flags_problem(args, (("--pairs", "pairs", ("semantic_preference",)),
                                            ("--word-labels", "word_labels", ("story_word_category",)),
                                            ("--stories", "stories", word_tasks),
                                            ("--corpus", "corpus", word_tasks), ("--context", "context", word_tasks),
                                            ("--folds", "folds", ("story_word_category",)),
                                            ("--max-per-word", "max_per_word", word_tasks))):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.stories is not None and args.corpus not in (None, "ds003020"):  # the other corpora read every recording
        print(f"error: --stories chooses ds003020 stories; --corpus {args.corpus} reads every recording of its folder",
              file=sys.stderr)
        return EXIT_USAGE
    if args.task in word_tasks:  # the defaults, resolved where they apply (config.json records them)
        args.corpus, args.context = args.corpus or "ds003020", 3.0 if args.context is None else args.context
        args.folds = (args.folds or 6) if args.task == "story_word_category" else None
    if args.task == "story_word_category" and not (args.word_labels or args.compare):
        print("error: --task story_word_category needs --word-labels (TSV with header word<TAB>label)", file=sys.stderr)
        return EXIT_USAGE
    if args.max_per_word is None:
        args.max_per_word = 5 if args.task == "story_word_category" else 10

    def task(args, probed, device, cache_dir):
        if args.task == "semantic_preference":
            return semantic_preference_task(args, probed, device)
        if args.task == "story_word_category":
            return story_word_task(args, probed, device)
        run_probe_task(args.task, args.data_dir, probed, cache_dir, batch_size=args.batch_size, device=device,
                       precision=resolve_precision("auto", device), seed=args.seed, progress=not args.no_progress,
                       config=vars(args), threads=args.inference_threads,
                       n_permutations=args.permutations, side_by_side=side_by_side(args))

    def read_inputs():  # small: read (and checked) before the models load, not after them
        for path, read in ((args.pairs, read_pairs), (args.word_labels, read_word_labels)):
            if path:
                read(path)
        if args.stories:  # a typo: named with the closest story
            du.Ds003020(args.data_dir).check_story_names(args.stories, "--stories")
    return run(args, task, read_inputs)


if __name__ == "__main__":
    sys.exit(main())
