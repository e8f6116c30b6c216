import numpy as np
import pytest

from textgrid_utils import (TextGridError, decode_textgrid_bytes, format_textgrid, is_word, parse_textgrid,
                            phones_from_tiers, read_textgrid, strip_stress, words_from_tiers)

TIERS = {"phone": [(0.5, 0.6, "DH"), (0.6, 0.7, "AH0"), (0.7, 0.9, "D"), (0.9, 1.1, "AO1"), (1.1, 1.2, "G")],
         "word": [(0.0, 0.5, "sp"), (0.5, 0.7, "the"), (0.7, 1.2, "dog"), (1.2, 1.4, "{SL}"), (1.4, 1.5, "br"),
                  (1.5, 1.6, "{LG}"), (1.6, 1.8, "sentence_end"), (1.8, 1.9, "")]}


@pytest.mark.parametrize("short", [False, True])
def test_long_and_short_formats_give_the_same_tiers(short):
    text = format_textgrid(TIERS, 2.0, short=short)
    assert ("xmin =" in text) != short
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


def test_word_filter_and_stress():
    assert not is_word("{NS}") and is_word(" {NS} ") and not is_word("SP") and is_word("{CG}") and is_word("{IG}")
    assert strip_stress("ah0") == "AH" and strip_stress("ER12") == "ER"
    assert decode_textgrid_bytes(b"\xef\xbb\xbfa\r\nb") == "a\nb"


def test_word_tier_by_name_for_aligner_output():
    # Montreal Forced Aligner order: words first, phones second
    text = format_textgrid({"words": TIERS["word"], "phones": TIERS["phone"]}, 2.0)
    tiers = parse_textgrid(text)
    assert [t.name for t in tiers] == ["words", "phones"]
    assert words_from_tiers(tiers, by_name=True).labels == ["the", "dog", "{SL}", ""]
    assert words_from_tiers(tiers).labels == ["DH", "AH0", "D", "AO1", "G"]  # by index: tier 1, here the phones
    unnamed = parse_textgrid(format_textgrid(TIERS, 2.0))  # ds003020 names ("phone", "word"): tier 1 either way
    assert words_from_tiers(unnamed, by_name=True).labels == words_from_tiers(unnamed).labels
