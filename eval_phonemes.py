"""Probe a frozen speech model for phonemes and sentence type on TIMIT (SPEC-methods.md §5).

    python eval_phonemes.py --data-dir /path/to/TIMIT --model-name facebook/wav2vec2-base --out results/phon_w2v
    python eval_phonemes.py --task phonemes_frame ...     # 39-class phone per frame (every --frame-step-th frame)
    python eval_phonemes.py --task sentence_type ...      # SA / SI / SX
    python eval_phonemes.py ... --model-name M_pre M_tuned --out results/phon_pre results/phon_tuned  # several models
    python eval_phonemes.py --compare results/phon_pre results/phon_tuned --out results/phon_cmp

TIMIT layout: TRAIN|TEST/DR1..DR8/<SPEAKER>/<UTT>.WAV (NIST SPHERE) + .PHN/.WRD, any letter case. Phones are
folded 61 -> 39 (Lee & Hon); TRAIN speakers are split into train/val by speaker, TEST is only scored.
Outputs in --out: results.json, table.md, <task>_by_layer.png, config.json.
"""
from __future__ import annotations

import sys

from probe_cli import common_parser, run, side_by_side, task_flags_problem
from probe_tasks import run_probe_task
from run_utils import EXIT_USAGE, positive_int, resolve_precision

TIMIT_TASKS = ["phonemes", "phonemes_frame", "sentence_type"]


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0], TIMIT_TASKS, "TIMIT root (holds TRAIN/ and TEST/)")
    parser.add_argument("--frame-step", type=positive_int, help="phonemes_frame: keep every N-th frame (default 4)")
    args = parser.parse_args(argv)
    if problem := task_flags_problem(args, (("--frame-step", "frame_step", ("phonemes_frame",)),)):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.frame_step is None:
        args.frame_step = 4

    def task(args, probed, device, cache_dir):
        run_probe_task(args.task, args.data_dir, probed, cache_dir, frame_step=args.frame_step,
                       batch_size=args.batch_size, device=device, precision=resolve_precision("auto", device),
                       seed=args.seed, progress=not args.no_progress, config=vars(args),
                       threads=args.inference_threads, n_permutations=args.permutations,
                       side_by_side=side_by_side(args))
    return run(args, task)


if __name__ == "__main__":
    sys.exit(main())
