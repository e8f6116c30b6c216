"""Praat TextGrids of the stories: decoding, parsing (long, short and chronological formats), word/phone sequences.

Tiers are addressed by index as in the Moth Radio Hour data: tier 0 holds phones, tier 1 words; `check_phone_tier`
refuses a grid whose tier 0 is mostly not ARPAbet phones (words first, as the Montreal Forced Aligner writes). The
long and short formats are parsed by the `textgrid` package after the raw bytes are normalised (UTF-8 BOM stripped,
UTF-16 decoded, CRLF folded), so one code path serves files and the text held in the Box pickles. The package does not
read Praat's third text format, the chronological one, which the Huth-lab parser reads and which public code
written for ds003020 handles for some of its stories; `_parse_chronological` reads it under the package's
conventions (times rounded to 5 decimals, zero-duration intervals dropped, intervals within their tier), so a
story's tiers do not depend on how its file is serialised.
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
TIME_DIGITS = 5                # the textgrid package rounds every time to 5 decimals (10 µs); so do we
CHRONOLOGICAL_HEADER = "Praat chronological TextGrid text file"
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
    if text.lstrip().startswith(f'"{CHRONOLOGICAL_HEADER}"'):
        return _parse_chronological(text, source)
    # The textgrid package reads paths only; a temporary UTF-8 copy keeps a single parser for files and pickles.
    fd, tmp = tempfile.mkstemp(suffix=".TextGrid")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        grid = _tg.TextGrid(strict=False)
        try:
            grid.read(tmp, encoding="utf-8")
        except Exception as err:
            raise TextGridError(f"{source}: cannot parse TextGrid ({_parse_error_detail(err, text)})") from err
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


def _parse_error_detail(err: Exception, text: str) -> str:
    """The textgrid package's error in words, with where the file stops (a truncated download is the usual cause).

    Its bounds checks raise ValueError(bound) with the bound alone; its other failures (a regex that found no
    match, an unexpected line) say nothing of the line, so the interval count and the last line are given.
    """
    if type(err) is ValueError and len(err.args) == 1 and isinstance(err.args[0], (int, float)):
        return (f"an interval or tier reaches past {err.args[0]:g} s, the xmin or xmax of the tier or grid holding it: "
                f"the header's times do not cover its intervals")
    lines = text.rstrip().split("\n")
    where = f"the file has {len(lines)} lines and its last is {lines[-1].strip()[:60]!r}"
    declared = sum(int(n) for n in re.findall(r"^\s*intervals: size = (\d+)\s*$", text, re.M))
    held = len(re.findall(r"^\s*intervals \[\d+\]:?\s*$", text, re.M))
    if held < declared:
        where = f"its tiers declare {declared} intervals but it holds {held}, so it looks truncated; " + where
    return f"{where}; the textgrid package says {type(err).__name__}: {err}"


# A chronological file is a stream of tokens: quoted strings ("" escapes a quote; newlines allowed), bare
# numbers, and comments from "!" to the end of the line, as Praat's own reader takes them.
_CHRONOLOGICAL_TOKEN = re.compile(r'\s+|!.*|"((?:[^"]|"")*)"|([^\s"!]+)')


def _chronological_tokens(text: str, source: str) -> list[tuple[str, str, int]]:
    """(kind "string" or "bare", value, line number) of each token of a chronological TextGrid."""
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = _CHRONOLOGICAL_TOKEN.match(text, pos)
        if match is None:       # only an unterminated string gets here
            raise TextGridError(f"{source}: cannot parse TextGrid (line {line}: a quoted string that is never closed, "
                                f"found {text[pos:pos + 40]!r})")
        if match.group(1) is not None:
            tokens.append(("string", match.group(1).replace('""', '"'), line))
        elif match.group(2) is not None:
            tokens.append(("bare", match.group(2), line))
        line += text.count("\n", pos, match.end())
        pos = match.end()
    return tokens


def _parse_chronological(text: str, source: str) -> list[TimedLabels]:
    """Parse Praat's chronological TextGrid text format into one TimedLabels per interval tier.

    Layout: the header string; the grid's xmin and xmax; the number of tiers; per tier its class, name, xmin
    and xmax; then entries in time order, each "tier number, start, end, text" (interval tiers) or "tier number,
    time, mark" (point tiers, skipped as the long and short formats' are).
    """
    tokens, pos = _chronological_tokens(text, source), 0

    def take(kind: str, what: str):
        nonlocal pos
        if pos >= len(tokens):
            raise TextGridError(f"{source}: cannot parse TextGrid (the file ends where {what} was expected)")
        found, value, line = tokens[pos]
        pos += 1
        try:
            if kind == "string" and found == "string":
                return value
            if kind == "number" and found == "bare":
                return round(float(value), TIME_DIGITS)
            if kind == "count" and found == "bare":
                return int(value)
        except ValueError:
            pass
        shown = f'"{value}"' if found == "string" else value
        raise TextGridError(f"{source}: cannot parse TextGrid (line {line}: expected {what}, found {shown[:40]})")

    if take("string", "the header") != CHRONOLOGICAL_HEADER:
        raise TextGridError(f"{source}: cannot parse TextGrid (expected the header \"{CHRONOLOGICAL_HEADER}\")")
    grid_min, grid_max = take("number", "the grid's xmin"), take("number", "the grid's xmax")
    tiers = []
    for k in range(1, take("count", "the number of tiers") + 1):
        tier_class, name = take("string", f"tier {k}'s class"), take("string", f"tier {k}'s name")
        tier_min, tier_max = take("number", f"tier {k}'s xmin"), take("number", f"tier {k}'s xmax")
        if tier_min < grid_min or tier_max > grid_max:
            raise TextGridError(f"{source}: cannot parse TextGrid (tier {k} ({name!r}) spans {tier_min:g}-{tier_max:g} "
                                f"s, outside the grid's {grid_min:g}-{grid_max:g} s)")
        tiers.append({"class": tier_class, "name": name, "min": tier_min, "max": tier_max, "intervals": []})
    while pos < len(tokens):
        line = tokens[pos][2]
        k = take("count", "a tier number")
        if not 1 <= k <= len(tiers):
            raise TextGridError(f"{source}: cannot parse TextGrid (line {line}: tier number {k}, the file has "
                                f"{len(tiers)} tiers)")
        tier = tiers[k - 1]
        if tier["class"] != "IntervalTier":      # a point: its time and mark, read past
            take("number", "a point's time")
            take("string", "a point's mark")
            continue
        start, end = take("number", "an interval's start"), take("number", "an interval's end")
        label = take("string", "an interval's text")
        if start < tier["min"] or end > tier["max"]:
            raise TextGridError(f"{source}: cannot parse TextGrid (line {line}: interval {start:g}-{end:g} s of tier "
                                f"{k} ({tier['name']!r}) lies outside the tier's {tier['min']:g}-{tier['max']:g} s)")
        if start < end:     # Praat has no zero-duration intervals; the textgrid package drops them too
            tier["intervals"].append((start, end, label))
    out = []
    for tier in tiers:
        if tier["class"] != "IntervalTier":
            continue
        intervals = sorted(tier["intervals"], key=lambda iv: iv[0])
        out.append(TimedLabels(starts=np.array([iv[0] for iv in intervals], dtype=np.float64),
                               ends=np.array([iv[1] for iv in intervals], dtype=np.float64),
                               labels=[iv[2] for iv in intervals], name=tier["name"]))
    return out


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


# The 39-phone CMU ARPAbet set, stress digits stripped (what P2FA writes in the stories' phone tiers).
ARPABET_PHONES = frozenset("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
                           "UH UW V W Y Z ZH".split())


def _counted_labels(tier: TimedLabels) -> list[str]:
    """A tier's labels less silence and noise markers (the Huth ones, braced ones, aligners' sil and spn) and empty
    ones, stripped: what `check_phone_tier` counts."""
    labels = [label.strip() for label in tier.labels if is_word(label)]
    return [label for label in labels if label and not label.startswith("{") and label.lower() not in ("sil", "spn")]


def check_phone_tier(tiers: list[TimedLabels], source: str = "<text>") -> None:
    """Raise TextGridError naming `source` unless at least half of tier 0's labels are ARPAbet phones.

    Silence and noise markers, braced labels ({SL}) and empty labels are not counted. A grid with its tiers in the
    other order (words first, as the Montreal Forced Aligner writes them) would otherwise be read without an error:
    the phone features computed on words, the word features on phones. A tier 0 without any counted label passes
    (`Ds003020.phones` refuses it when phones are needed).
    """
    if not tiers:
        return
    labels = _counted_labels(tiers[PHONE_TIER])
    is_phone = [strip_stress(p) in ARPABET_PHONES for p in labels]
    n_phones = sum(is_phone)
    if not labels or 2 * n_phones >= len(labels):
        return
    other = list(dict.fromkeys(p for p, phone in zip(labels, is_phone) if not phone))[:5]
    hint = ""
    if len(tiers) > WORD_TIER:
        words = _counted_labels(tiers[WORD_TIER])
        if words and 2 * sum(strip_stress(w) in ARPABET_PHONES for w in words) > len(words):
            hint = f"; tier {WORD_TIER} ({tiers[WORD_TIER].name!r}) holds phones: the tiers are in the other order"
    raise TextGridError(f"{source}: tier {PHONE_TIER} ({tiers[PHONE_TIER].name!r}) should hold ARPAbet phones (tier "
                        f"{PHONE_TIER} phones, tier {WORD_TIER} words), but {n_phones} of its {len(labels)} labels are "
                        f"phones; others: {', '.join(map(repr, other))}{hint}")


def phones_from_tiers(tiers: list[TimedLabels], source: str = "<text>", keep_stress: bool = False) -> TimedLabels:
    """Phone intervals of tier 0, silence/noise markers dropped, stress digits stripped unless asked."""
    tier = _tier(tiers, PHONE_TIER, source)
    keep = np.array([is_word(p) and p.strip() != "" for p in tier.labels], dtype=bool)
    labels = [p.strip() if keep_stress else strip_stress(p) for p, k in zip(tier.labels, keep) if k]
    return TimedLabels(tier.starts[keep], tier.ends[keep], labels)


TEXTGRID_STYLES = ("long", "short", "chronological")


def format_textgrid(tiers: dict[str, list[tuple[float, float, str]]], xmax: float, style: str = "long",
                    gap_label: str = "sp") -> str:
    """Write interval tiers as Praat TextGrid text; gaps get `gap_label`.

    Parameters
    ----------
    tiers : ordered mapping tier name -> list of (start_s, end_s, label), sorted and non-overlapping.
    xmax : end time of the grid in seconds.
    style : one of TEXTGRID_STYLES, Praat's three text formats ("chronological": every tier's intervals in one
        stream ordered by start time, ties in tier order, a "! name:" comment where the tier changes, as Praat
        writes it).
    """
    if style not in TEXTGRID_STYLES:
        raise ValueError(f"format_textgrid: style must be one of {TEXTGRID_STYLES}, found {style!r}")

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
    if style == "chronological":
        lines = [f'"{CHRONOLOGICAL_HEADER}"', f"0 {xmax}   ! Time domain.", f"{len(filled)}   ! Number of tiers."]
        lines += [f'"IntervalTier" {q(name)} 0 {xmax}' for name in filled]
        names = list(filled)
        stream = sorted(((a, k, b, lab) for k, ivs in enumerate(filled.values(), 1) for a, b, lab in ivs),
                        key=lambda entry: entry[:2])
        previous = None
        for a, k, b, lab in stream:
            if k != previous:
                lines += ["", f"! {names[k - 1]}:"]
                previous = k
            lines += [f"{k} {a} {b}", q(lab)]
        return "\n".join(lines) + "\n"
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', ""]
    if style == "short":
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
