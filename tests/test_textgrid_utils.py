import numpy as np
import pytest

from textgrid_utils import (TEXTGRID_STYLES, TextGridError, check_phone_tier, decode_textgrid_bytes, format_textgrid,
                            is_word, parse_textgrid, phones_from_tiers, read_textgrid, strip_stress, words_from_tiers)

TIERS = {"phone": [(0.5, 0.6, "DH"), (0.6, 0.7, "AH0"), (0.7, 0.9, "D"), (0.9, 1.1, "AO1"), (1.1, 1.2, "G")],
         "word": [(0.0, 0.5, "sp"), (0.5, 0.7, "the"), (0.7, 1.2, "dog"), (1.2, 1.4, "{SL}"), (1.4, 1.5, "br"),
                  (1.5, 1.6, "{LG}"), (1.6, 1.8, "sentence_end"), (1.8, 1.9, "")]}


@pytest.mark.parametrize("style", TEXTGRID_STYLES)
def test_the_three_formats_give_the_same_tiers(style):
    text = format_textgrid(TIERS, 2.0, style=style)
    assert ("xmin =" in text) == (style == "long") and ("! Time domain." in text) == (style == "chronological")
    tiers = parse_textgrid(text)
    words = words_from_tiers(tiers)
    # sp, br, {LG} (lg) and sentence_end dropped; {SL} and the empty label kept (Huth convention)
    assert words.labels == ["the", "dog", "{SL}", ""]
    np.testing.assert_allclose(words.midpoints, [0.6, 0.95, 1.3, 1.85])
    phones = phones_from_tiers(tiers)
    assert phones.labels == ["DH", "AH", "D", "AO", "G"]
    assert phones_from_tiers(tiers, keep_stress=True).labels[1] == "AH0"


@pytest.mark.parametrize("encode", [
    lambda t: t.replace("\n", "\r\n").encode("utf-8"),
    lambda t: t.replace("\n", "\r").encode("utf-8"),          # classic Mac line endings
    lambda t: ("\ufeff" + t).encode("utf-8"),
    lambda t: t.replace("\n", "\r\n").encode("utf-16"),   # BOM included by Python
    lambda t: t.encode("utf-16-be").join([b"\xfe\xff", b""]),
])
def test_encodings_and_line_endings(tmp_path, encode):
    path = tmp_path / "story.TextGrid"
    path.write_bytes(encode(format_textgrid(TIERS, 2.0)))
    assert words_from_tiers(read_textgrid(path)).labels == ["the", "dog", "{SL}", ""]


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("hello world")
    with pytest.raises(TextGridError, match="bad.TextGrid.*not a Praat TextGrid"):
        read_textgrid(bad)
    one_tier = tmp_path / "one.TextGrid"
    one_tier.write_text(format_textgrid({"phone": TIERS["phone"]}, 2.0))
    with pytest.raises(TextGridError, match="one.TextGrid.*at least 2 interval tiers.*found 1"):
        words_from_tiers(read_textgrid(one_tier), str(one_tier))
    with pytest.raises(FileNotFoundError, match="missing.TextGrid"):
        read_textgrid(tmp_path / "missing.TextGrid")
    short_header = tmp_path / "short_header.TextGrid"  # the grid's xmax (1.5 s) ends before its tiers' (2 s)
    short_header.write_text(format_textgrid(TIERS, 2.0).replace("xmax = 2.0", "xmax = 1.5", 1))
    with pytest.raises(TextGridError, match=r"short_header.TextGrid: cannot parse TextGrid \(an interval or tier "
                                            r"reaches past 1.5 s, the xmin or xmax of the tier or grid holding it"):
        read_textgrid(short_header)


def test_a_truncated_long_textgrid_says_so(tmp_path):
    text = format_textgrid(TIERS, 2.0, style="long")
    cut = tmp_path / "cut.TextGrid"   # an interrupted download inside the third of the phone tier's 7 intervals (5 + 2 "sp")
    cut.write_text(text[:text.index("intervals [3]:") + len("intervals [3]:\n            xm")])
    with pytest.raises(TextGridError, match=r"cut.TextGrid: cannot parse TextGrid \(its tiers declare 7 intervals but "
                                            r"it holds 3, so it looks truncated; the file has \d+ lines and its last is "
                                            r"'xm'; the textgrid package says"):
        read_textgrid(cut)
    garbled = tmp_path / "garbled.TextGrid"   # complete, one line broken: no truncation claimed, the line count given
    garbled.write_text(text.replace("xmax = 0.6", "xmax 0.6", 1))
    with pytest.raises(TextGridError, match=r"garbled.TextGrid: cannot parse TextGrid \(the file has \d+ lines and its "
                                            r"last is '.*'; the textgrid package says") as caught:
        read_textgrid(garbled)
    assert "looks truncated" not in str(caught.value)


def test_word_filter_and_stress():
    assert not is_word("{NS}") and is_word(" {NS} ") and not is_word("SP") and is_word("{CG}") and is_word("{IG}")
    assert strip_stress("ah0") == "AH" and strip_stress("ER12") == "ER"
    assert decode_textgrid_bytes(b"\xef\xbb\xbfa\r\nb") == "a\nb"
    # phones: empty and blank labels are not phones either (a gap the aligner left unlabelled)
    tier = parse_textgrid(format_textgrid({"phone": [(0.1, 0.2, "S"), (0.2, 0.3, " "), (0.3, 0.4, "OW1")]}, 0.5,
                                          gap_label=""))
    assert phones_from_tiers(tier).labels == ["S", "OW"]
    np.testing.assert_array_equal(phones_from_tiers(tier).starts, [0.1, 0.3])


def test_phone_tier_check_counts_arpabet_labels():
    check_phone_tier(parse_textgrid(format_textgrid(TIERS, 2.0)), "ok.TextGrid")  # ds003020 order
    swapped = parse_textgrid(format_textgrid({"word": TIERS["word"], "phone": TIERS["phone"]}, 2.0))
    # counted: the, dog; not: sp (the gaps), {SL}, {LG}, br, sentence_end and ""
    with pytest.raises(TextGridError, match=r"^x.TextGrid: tier 0 \('word'\) should hold ARPAbet phones \(tier 0 "
                                            r"phones, tier 1 words\), but 0 of its 2 labels are phones; others: "
                                            r"'the', 'dog'; tier 1 \('phone'\) holds phones: the tiers are in the "
                                            r"other order$"):
        check_phone_tier(swapped, "x.TextGrid")
    words_only = parse_textgrid(format_textgrid({"a": TIERS["word"], "b": TIERS["word"]}, 2.0))
    with pytest.raises(TextGridError, match=r"0 of its 2 labels are phones; others: 'the', 'dog'$"):  # no order hint
        check_phone_tier(words_only, "x.TextGrid")
    # half the counted labels phones (lower case, stress digits, sil and spn aside) passes; fewer than half fails
    half = [(0.0, 0.1, "dh"), (0.1, 0.2, "ah0"), (0.2, 0.3, "xx"), (0.3, 0.4, "yy"), (0.4, 0.5, "sil"),
            (0.5, 0.6, "spn"), (0.6, 0.7, "{NS}")]
    check_phone_tier(parse_textgrid(format_textgrid({"phone": half}, 1.0)), "half.TextGrid")
    less = half + [(0.7, 0.8, "zz")]
    with pytest.raises(TextGridError, match=r"2 of its 5 labels are phones; others: 'xx', 'yy', 'zz'$"):
        check_phone_tier(parse_textgrid(format_textgrid({"phone": less}, 1.0)), "less.TextGrid")
    check_phone_tier([], "empty.TextGrid")  # nothing to check: phones() refuses an empty phone tier itself
    check_phone_tier(parse_textgrid(format_textgrid({"phone": [(0.0, 1.0, "sp")]}, 1.0)), "silent.TextGrid")


def test_word_tier_by_name_for_aligner_output():
    # Montreal Forced Aligner order: words first, phones second
    text = format_textgrid({"words": TIERS["word"], "phones": TIERS["phone"]}, 2.0)
    tiers = parse_textgrid(text)
    assert [t.name for t in tiers] == ["words", "phones"]
    assert words_from_tiers(tiers, by_name=True).labels == ["the", "dog", "{SL}", ""]
    assert words_from_tiers(tiers).labels == ["DH", "AH0", "D", "AO1", "G"]  # by index: tier 1, here the phones
    unnamed = parse_textgrid(format_textgrid(TIERS, 2.0))  # ds003020 names ("phone", "word"): tier 1 either way
    singular = parse_textgrid(format_textgrid({" Word ": TIERS["word"], "phones": TIERS["phone"]}, 2.0))
    assert words_from_tiers(singular, by_name=True).labels == ["the", "dog", "{SL}", ""]  # "word", any case or spaces
    assert words_from_tiers(unnamed, by_name=True).labels == words_from_tiers(unnamed).labels


def test_formats_agree_on_unrounded_times_and_zero_duration_intervals():
    # times with more digits than the 5 decimals the textgrid package keeps, and a zero-duration word
    rng = np.random.default_rng(0)
    bounds = np.round(np.cumsum(rng.uniform(0.01, 0.4, 41)), 12)
    phones = [(float(a), float(b), f"P{i}") for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    words = [(float(bounds[i]), float(bounds[i + 4]), f"w{i}") for i in range(0, 36, 4)]
    words.insert(3, (words[2][1], words[2][1], "empty"))  # zero duration, between two words
    parsed = {style: parse_textgrid(format_textgrid({"phone": phones, "word": words}, float(bounds[-1]) + 1,
                                                    style=style, gap_label=""))
              for style in TEXTGRID_STYLES}
    for style in ("short", "chronological"):
        for mine, ref in zip(parsed[style], parsed["long"]):
            assert mine.name == ref.name and mine.labels == ref.labels
            np.testing.assert_array_equal(mine.starts, ref.starts)
            np.testing.assert_array_equal(mine.ends, ref.ends)
    word_tier = parsed["chronological"][1]
    assert "empty" not in word_tier.labels
    assert [w for w in word_tier.labels if w] == [w[2] for w in words if w[2] != "empty"]
    # gaps (label "") before the first phone, at 0, and after the last one
    np.testing.assert_array_equal(parsed["chronological"][0].starts, np.round(np.r_[0.0, bounds], 5))


# What Praat writes (Save as chronological text file): tiers interleaved by time, "! name:" comments, a point tier
PRAAT_CHRONOLOGICAL = """"Praat chronological TextGrid text file"
0 1.5   ! Time domain.
3   ! Number of tiers.
"IntervalTier" "phone" 0 1.5
"TextTier" "notes" 0 1.5
"IntervalTier" "word" 0 1.5

! phone:
1 0 0.5
"sp"

! word:
3 0 0.5
"sp"

! notes:
2 0.25
"a ""quoted"" note"

! phone:
1 0.5 0.7000004
"DH"
1 0.7000004 1.5
"AH0"

! word:
3 0.5 1.5
"the ""dog"" line
two"
3 1.5 1.5
"zero"
"""


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_praat_chronological_output_with_a_point_tier_and_comments(tmp_path, newline):
    path = tmp_path / "story.TextGrid"
    path.write_bytes(PRAAT_CHRONOLOGICAL.replace("\n", newline).encode("utf-16"))  # CRLF or CR and UTF-16 too
    tiers = read_textgrid(path)  # a "!" comment ends at a lone CR too, not at the file's end
    assert [t.name for t in tiers] == ["phone", "word"]  # the point tier skipped, as in the other formats
    assert tiers[0].labels == ["sp", "DH", "AH0"]
    np.testing.assert_array_equal(tiers[0].ends, [0.5, 0.7, 1.5])      # rounded to 5 decimals
    assert tiers[1].labels == ["sp", 'the "dog" line\ntwo']            # the zero-duration "zero" dropped
    assert words_from_tiers(tiers).labels == ['the "dog" line\ntwo']
    assert phones_from_tiers(tiers).labels == ["DH", "AH"]


def test_chronological_entries_out_of_time_order_give_each_tier_in_time_order():
    # a hand-edited file (or another writer) need not list each tier's entries in time order
    text = "\n".join(['"Praat chronological TextGrid text file"', "0 1   ! Time domain.", "1   ! Number of tiers.",
                      '"IntervalTier" "phone" 0 1', "1 0.5 1", '"OW1"', "1 0 0.5", '"S"']) + "\n"
    tier = parse_textgrid(text)[0]
    assert tier.labels == ["S", "OW1"]
    np.testing.assert_array_equal(tier.starts, [0.0, 0.5])
    np.testing.assert_array_equal(tier.ends, [0.5, 1.0])


def test_format_textgrid_labels_every_gap_however_short():
    # a gap of 0.5 ms between phones must become a labelled interval: the tier has to cover the grid without holes
    tiers = parse_textgrid(format_textgrid({"phone": [(0.1, 0.2, "S"), (0.2005, 0.3, "OW1")]}, 0.4))
    assert tiers[0].labels == ["sp", "S", "sp", "OW1", "sp"]
    np.testing.assert_array_equal(tiers[0].starts, [0.0, 0.1, 0.2, 0.2005, 0.3])


def test_the_ds003020_chronological_layout():
    # the start of a ds003020 story's chronological TextGrid as public code for the dataset quotes it: no
    # comment lines, the grid starting after 0, tiers interleaved entry by entry
    text = "\n".join(['"Praat chronological TextGrid text file"',
                      "0.0124716553288 819.988889088   ! Time domain.", "2   ! Number of tiers.",
                      '"IntervalTier" "phone" 0.0124716553288 819.988889088',
                      '"IntervalTier" "word" 0.0124716553288 819.988889088',
                      "1 0.0124716553288 1.26961451247", '"ns"', "2 0.0124716553288 1.26961451247", '"{NS}"',
                      "1 1.26961451247 1.48948829731937", '"S"', "2 1.26961451247 2.23741496599", '"SO"',
                      "1 1.48948829731937 2.23741496599", '"OW1"']) + "\n"
    tiers = parse_textgrid(text, "wheretheressmoke.TextGrid")
    assert [t.labels for t in tiers] == [["ns", "S", "OW1"], ["{NS}", "SO"]]
    np.testing.assert_array_equal(tiers[1].starts, [0.01247, 1.26961])
    words = words_from_tiers(tiers)
    assert words.labels == ["SO"] and words.midpoints[0] == pytest.approx((1.26961 + 2.23741) / 2)
    assert phones_from_tiers(tiers).labels == ["S", "OW"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('"AH0"\n', '"AH0\n'), r"line \d+: a quoted string that is never closed"),
    (lambda t: t[:t.index('"AH0"')], "the file ends where an interval's text was expected"),
    (lambda t: t.replace("1 0.5 0.7000004", "4 0.5 0.7000004"), r"line 21: tier number 4, the file has 3 tiers"),
    (lambda t: t.replace("1 0.5 0.7000004", "0 0.5 0.7000004"), r"line 21: tier number 0, the file has 3 tiers"),
    (lambda t: t.replace("1 0.5 0.7000004", "1 0.5 x"), r"line 21: expected an interval's end, found x"),
    (lambda t: t.replace("1 0.7000004 1.5", "1 0.7000004 1.6"), r"interval 0.7-1.6 s of tier 1 \('phone'\) lies "
                                                              r"outside the tier's 0-1.5 s"),
    (lambda t: t.replace('"word" 0 1.5', '"word" 0 2'), r"tier 3 \('word'\) spans 0-2 s, outside the grid's 0-1.5 s"),
    (lambda t: t.replace("3   ! Number", "three   ! Number"), "expected the number of tiers, found three"),
])
def test_chronological_errors_name_the_file_and_line(tmp_path, edit, message):
    path = tmp_path / "bad.TextGrid"
    path.write_text(edit(PRAAT_CHRONOLOGICAL))
    with pytest.raises(TextGridError, match=r"bad.TextGrid: cannot parse TextGrid \(.*" + message):
        read_textgrid(path)


def test_format_textgrid_refuses_an_unknown_style():
    with pytest.raises(ValueError, match="style must be one of.*found 'praat'"):
        format_textgrid(TIERS, 2.0, style="praat")
