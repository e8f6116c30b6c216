"""Praat TextGrids of the stories: decoding, parsing (long and short formats) and word/phone sequences.

Tiers are addressed by index as in the Moth Radio Hour data: tier 0 holds phones, tier 1 words. Parsing goes
through the `textgrid` package after the raw bytes are normalised (UTF-8 BOM stripped, UTF-16 decoded, CRLF
folded), so one code path serves files and the text held in the Box pickles.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import textgrid as _tg

PHONE_TIER, WORD_TIER = 0, 1
# Huth convention: these labels are not words (after lower-casing and stripping braces).
BAD_WORDS = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp"})


class TextGridError(ValueError):
    """A TextGrid that cannot be read as the dataset requires."""


@dataclass
class TimedLabels:
    """A sequence of labelled intervals.

    Attributes
    ----------
    starts, ends : (n,) float64 seconds from audio onset.
    labels : list of n strings.
    name : the tier's name in the file ("" when not read from a file).
    """
    starts: np.ndarray
    ends: np.ndarray
    labels: list
    name: str = ""

    @property
    def midpoints(self) -> np.ndarray:
        """(n,) interval midpoints in seconds (the Huth convention for word times)."""
        return (self.starts + self.ends) / 2.0

    def __len__(self) -> int:
        return len(self.labels)


def decode_textgrid_bytes(raw: bytes) -> str:
    """Decode TextGrid bytes: UTF-16 when a BOM says so, else UTF-8 (BOM stripped); CRLF -> LF."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    else:
        text = raw.decode("utf-8-sig", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def parse_textgrid(text: str, source: str = "<text>") -> list[TimedLabels]:
    """Parse a Praat TextGrid (long "ooTextFile" or short format) into one TimedLabels per interval tier.

    Parameters
    ----------
    text : the decoded file content.
    source : file name used in error messages.
    """
    if "TextGrid" not in text[:200]:
        raise TextGridError(f"{source}: not a Praat TextGrid (expected a header naming 'TextGrid', found "
                            f"{text[:60]!r})")
    # The textgrid package reads paths only; a temporary UTF-8 copy keeps a single parser for files and pickles.
    fd, tmp = tempfile.mkstemp(suffix=".TextGrid")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        grid = _tg.TextGrid(strict=False)
        try:
            grid.read(tmp, encoding="utf-8")
        except Exception as err:
            raise TextGridError(f"{source}: cannot parse TextGrid ({_parse_error_detail(err)})") from err
    finally:
        os.unlink(tmp)
    tiers = []
    for tier in grid.tiers:
        if not isinstance(tier, _tg.IntervalTier):
            continue
        tiers.append(TimedLabels(starts=np.array([iv.minTime for iv in tier], dtype=np.float64),
                                 ends=np.array([iv.maxTime for iv in tier], dtype=np.float64),
                                 labels=[iv.mark for iv in tier], name=tier.name or ""))
    return tiers


def _parse_error_detail(err: Exception) -> str:
    """The textgrid package's error in words: its bounds checks raise ValueError(bound) with the bound alone."""
    if type(err) is ValueError and len(err.args) == 1 and isinstance(err.args[0], (int, float)):
        return (f"an interval or tier reaches past {err.args[0]:g} s, the xmin or xmax of the tier or grid holding it: "
                f"the header's times do not cover its intervals")
    return f"{type(err).__name__}: {err}"


def read_textgrid(path: str | os.PathLike) -> list[TimedLabels]:
    """Read a TextGrid file from disk (any of the encodings and formats of the dataset)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TextGrid not found: {path}")
    return parse_textgrid(decode_textgrid_bytes(path.read_bytes()), source=str(path))


def _tier(tiers: list[TimedLabels], index: int, source: str) -> TimedLabels:
    if len(tiers) <= index:
        raise TextGridError(f"{source}: expected at least {index + 1} interval tiers (0 phones, 1 words), "
                            f"found {len(tiers)}")
    return tiers[index]


def is_word(label: str) -> bool:
    """Huth-convention word filter: False for silence/noise markers, True otherwise ({SL}, {CG}, '' kept)."""
    return label.lower().strip("{}").strip() not in BAD_WORDS


def words_from_tiers(tiers: list[TimedLabels], source: str = "<text>", by_name: bool = False) -> TimedLabels:
    """Word intervals of tier 1 with the Huth-convention filtering applied.

    by_name : take the tier named "words" or "word" (any case) when there is one, as in Montreal Forced
        Aligner output (words first, phones second), and fall back to tier 1 otherwise.
    """
    named = [t for t in tiers if t.name.strip().lower() in ("words", "word")] if by_name else []
    tier = named[0] if named else _tier(tiers, WORD_TIER, source)
    keep = np.array([is_word(w) for w in tier.labels], dtype=bool)
    return TimedLabels(tier.starts[keep], tier.ends[keep], [w for w, k in zip(tier.labels, keep) if k])


_STRESS = re.compile(r"\d+$")


def strip_stress(phone: str) -> str:
    """ARPAbet phone without its stress digit, upper-case (AH0 -> AH)."""
    return _STRESS.sub("", phone.strip()).upper()


def phones_from_tiers(tiers: list[TimedLabels], source: str = "<text>", keep_stress: bool = False) -> TimedLabels:
    """Phone intervals of tier 0, silence/noise markers dropped, stress digits stripped unless asked."""
    tier = _tier(tiers, PHONE_TIER, source)
    keep = np.array([is_word(p) and p.strip() != "" for p in tier.labels], dtype=bool)
    labels = [p.strip() if keep_stress else strip_stress(p) for p, k in zip(tier.labels, keep) if k]
    return TimedLabels(tier.starts[keep], tier.ends[keep], labels)


def format_textgrid(tiers: dict[str, list[tuple[float, float, str]]], xmax: float, short: bool = False,
                    gap_label: str = "sp") -> str:
    """Write interval tiers as Praat TextGrid text (long or short format); gaps get `gap_label`.

    Parameters
    ----------
    tiers : ordered mapping tier name -> list of (start_s, end_s, label), sorted and non-overlapping.
    xmax : end time of the grid in seconds.
    """
    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    filled = {}
    for name, ivs in tiers.items():
        out, t = [], 0.0
        for a, b, lab in ivs:
            if a > t + 1e-9:
                out.append((t, a, gap_label))
            out.append((a, b, lab))
            t = b
        if xmax > t + 1e-9:
            out.append((t, xmax, gap_label))
        filled[name] = out
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', ""]
    if short:
        lines += ["0", f"{xmax}", "<exists>", f"{len(filled)}"]
        for name, ivs in filled.items():
            lines += [q("IntervalTier"), q(name), "0", f"{xmax}", f"{len(ivs)}"]
            for a, b, lab in ivs:
                lines += [f"{a}", f"{b}", q(lab)]
    else:
        lines += ["xmin = 0", f"xmax = {xmax}", "tiers? <exists>", f"size = {len(filled)}", "item []:"]
        for i, (name, ivs) in enumerate(filled.items(), 1):
            lines += [f"    item [{i}]:", '        class = "IntervalTier"', f"        name = {q(name)}",
                      "        xmin = 0", f"        xmax = {xmax}", f"        intervals: size = {len(ivs)}"]
            for j, (a, b, lab) in enumerate(ivs, 1):
                lines += [f"        intervals [{j}]:", f"            xmin = {a}", f"            xmax = {b}",
                          f"            text = {q(lab)}"]
    return "\n".join(lines) + "\n"
