"""Probe a frozen speech model on the paper's other downstream tasks, and measure its semantic preference.

    python eval_downstream.py --task commands --data-dir /data/speech_commands_v0.02 --model-name M --out R
    python eval_downstream.py --task emotion  --data-dir /data/CREMA-D --model-name M --out R
    python eval_downstream.py --task intent   --data-dir /data/slurp --model-name M --out R   # or --task action
    python eval_downstream.py --task semantic_preference --data-dir /data/ds003020 --model-name M --out R \
        [--pairs downstream/semantic_pairs_en.tsv]   # word segments from the stories' TextGrids
    python eval_downstream.py --task semantic_preference --corpus timit --data-dir /data/TIMIT ...  # .WRD segments
    python eval_downstream.py --compare R_pre R_tuned --out R_cmp

semantic_category is the miniature's word task (data/downstream/words). Probes are chosen on the validation
split (SLURP devel, Speech Commands validation_list, held-out CREMA-D actors) and scored once on test.
"""
from __future__ import annotations

import sys
from pathlib import Path

from probe_cli import common_parser, run
from probe_tasks import run_probe_task, run_semantic_preference
from run_utils import resolve_precision

PROBE_TASKS = ["commands", "emotion", "intent", "action", "semantic_category"]


def semantic_preference_task(args, encoder, layers, device):
    """Word segments from ds003020 TextGrids (default) or TIMIT .WRD files."""
    import data_utils as du
    import downstream_data as dd
    from semantic_preference import ENGLISH_PAIRS
    if args.corpus == "ds003020":
        data = du.Ds003020(args.data_dir)
        stories = args.stories or sorted(data.respdict)
        words_by_source = {}
        for s in stories:
            w = data.words(s)
            words_by_source[s] = list(zip(w.starts.tolist(), w.ends.tolist(), w.labels))
        loader = data.audio
    else:
        utts = dd.read_timit(args.data_dir)
        words_by_source = {str(u.path): u.words for u in utts}
        loader = lambda src: dd.load_wav_16k(Path(src))  # noqa: E731
    run_semantic_preference(encoder, args.model_name, layers, words_by_source, loader, args.pairs or ENGLISH_PAIRS,
                            Path(args.out), args.context, args.max_per_word, device, args.seed,
                            not args.no_progress, config=vars(args))


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0], PROBE_TASKS + ["semantic_preference"],
                           "dataset root in its public layout (see README)")
    g = parser.add_argument_group("semantic preference")
    g.add_argument("--pairs", help="TSV word1/word2/relation (default: the shipped English list)")
    g.add_argument("--corpus", default="ds003020", choices=["ds003020", "timit"], help="where word segments come from")
    g.add_argument("--stories", nargs="+", help="ds003020 stories to take words from (default: all)")
    g.add_argument("--context", type=float, default=3.0, help="seconds of audio before each word given to the model")
    g.add_argument("--max-per-word", type=int, default=10, help="occurrences averaged per word")
    args = parser.parse_args(argv)

    def task(args, encoder, layers, device, cache_dir):
        if args.task == "semantic_preference":
            return semantic_preference_task(args, encoder, layers, device)
        run_probe_task(args.task, args.data_dir, encoder, args.model_name, layers, Path(args.out), cache_dir,
                       batch_size=args.batch_size, device=device, precision=resolve_precision("auto", device),
                       seed=args.seed, progress=not args.no_progress, config=vars(args))
    return run(args, task)


if __name__ == "__main__":
    sys.exit(main())
