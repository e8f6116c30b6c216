"""The commands the documentation shows use options the scripts have, with values their choices accept.

A renamed or removed flag leaves the README's commands failing for the user who copies them; this reads every
`python <script>.py ...` (and `torchrun ... <script>.py ...`) in the project's documentation and checks each
`--option` against the argparse parser that script's main() builds, without running anything.
"""
import argparse
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the Markdown, the Makefile, and the sources (usage docstrings, error messages that tell the user what to run)
DOCS = ("README.md", "docs/demo_record.md", "subject_NCs/README.md", "bench/RESULTS.md", "Makefile",
        *sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("*.py"), *ROOT.glob("bench/*.py")]))
# python / python3 / $(BIN)/python, or torchrun with its own options, then the script's path
COMMAND = re.compile(r"(?:\bpython3?|\$\(BIN\)/python|\btorchrun(?:\s+--\S+)*)\s+((?:bench/)?\w+\.py)\b([^\n`#]*)")


def doc_commands(text: str) -> list[tuple[str, list[str]]]:
    """(script path, argument tokens) of every command in `text`; placeholders and `...` kept as tokens.

    Shell line continuations are joined; a command ends at the end of its line, a closing backtick or a
    comment. Brackets of optional parts and `|` between alternatives are dropped, so their options count.
    """
    joined = re.sub(r"\\\n\s*", " ", text)
    return [(m.group(1), re.sub(r"[\[\]|]", " ", m.group(2)).split()) for m in COMMAND.finditer(joined)]


class _ParserBuilt(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def script_parser(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser `<script>.main()` builds, caught at its parse_args call (nothing after it runs)."""
    path = ROOT / script
    monkeypatch.syspath_prepend(str(path.parent))

    def catch(self, args=None, namespace=None):
        raise _ParserBuilt(self)

    module = importlib.import_module(path.stem)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_ParserBuilt) as built:
        module.main([])
    return built.value.parser


def option_problems(parser: argparse.ArgumentParser, tokens: list[str]) -> list[str]:
    """Options in `tokens` the parser lacks (exact names, no abbreviations), or a literal value outside its choices."""
    actions = parser._option_string_actions  # argparse keeps no public map from option string to action
    problems = []
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name, _, inline = token.partition("=")
        if name not in actions:
            problems.append(f"unknown option {name}")
            continue
        choices = actions[name].choices
        value = inline or (tokens[i + 1] if i + 1 < len(tokens) else "")
        if choices is not None and value and not value.startswith("-") and value != "...":
            if value not in [str(c) for c in choices]:
                problems.append(f"{name} {value}: expected one of {sorted(map(str, choices))}")
    return problems


def test_doc_commands_splits_continuations_comments_and_alternatives():
    text = ("Run `python a.py --x 1 [--y Y]` then:\n\n"
            "    python b.py --p 2 \\\n        --q 3   # --not-this\n"
            "    python c.py --task t ...  |  --task u ...\n"
            "    torchrun --nproc_per_node=4 d.py ... --batch-size 8\n"
            "\t$(BIN)/python bench/e.py --out runs/demo\n")
    assert doc_commands(text) == [
        ("a.py", ["--x", "1", "--y", "Y"]),
        ("b.py", ["--p", "2", "--q", "3"]),
        ("c.py", ["--task", "t", "...", "--task", "u", "..."]),
        ("d.py", ["...", "--batch-size", "8"]),
        ("bench/e.py", ["--out", "runs/demo"]),
    ]


def test_option_problems_names_unknown_options_and_bad_choices():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=["a", "b"])
    parser.add_argument("--out")
    assert option_problems(parser, ["--task", "a", "--out", "R", "--task=b", "--task", "..."]) == []
    assert option_problems(parser, ["--ou", "R", "--task", "c", "--task=d", "--nope"]) == [
        "unknown option --ou", "--task c: expected one of ['a', 'b']", "--task d: expected one of ['a', 'b']",
        "unknown option --nope"]


def test_documented_commands_use_real_options(monkeypatch):
    commands = [(doc, script, tokens) for doc in DOCS
                for script, tokens in doc_commands((ROOT / doc).read_text(encoding="utf-8"))]
    scripts = {script for _, script, _ in commands}
    # the documentation shows every user-facing script (a failed regex would otherwise pass silently)
    assert {"brain_trainer_story.py", "brain_evaluate.py", "eval_phonemes.py", "eval_downstream.py", "run_demo.py",
            "compute_noise_ceiling.py", "data_utils.py", "pycortex_rois.py"} <= scripts
    parsers = {}
    for script in sorted(scripts):
        assert (ROOT / script).is_file(), f"documented script {script} does not exist"
        parsers[script] = script_parser(script, monkeypatch)
        monkeypatch.undo()  # parse_args restored before the next module is imported
    problems = [f"{doc}: {script} {' '.join(tokens)}\n    -> {p}" for doc, script, tokens in commands
                for p in option_problems(parsers[script], tokens)]
    assert not problems, "documented commands the scripts would refuse:\n" + "\n".join(problems)
