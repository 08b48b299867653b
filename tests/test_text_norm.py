"""Per-language normalisation and error rates on hand-verified pairs: each expected value was worked
out by reading the pair (normalised forms and edit counts in the comments or in tests/data/error_rate_pairs.tsv),
and re-counted with jiwer / whisper-normalizer directly, not by running the code under test."""

from __future__ import annotations

import csv
from pathlib import Path

import jiwer
import pytest
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from stepeval.asr.text_norm import ErrorRate, corpus_error_rate, error_rate, language_family, normalise, resolve_language

PAIRS_FILE = Path(__file__).parent / "data" / "error_rate_pairs.tsv"
CHARACTER_LANGUAGES = ("zh", "zh-TW", "yue", "ja")


def _load_pairs() -> list[dict]:
    lines = [line for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    for row in rows:
        row["edits"] = int(row["edits"])
        chars = row["language"] in CHARACTER_LANGUAGES
        row["units"] = len(row["ref_norm"]) if chars else len(row["ref_norm"].split())
        row["kind"] = "cer" if chars else "wer"
    return rows


PAIRS = _load_pairs()
PAIR_IDS = [f"{row['language']}:{row['reference']}|{row['hypothesis']}" for row in PAIRS]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "language", "expected", "kind"),
    [
        # traditional -> simplified: 請給我看 == 请给我看
        ("請給我看", "请给我看", "zh", 0.0, "cer"),
        # Chinese numeral -> Arabic: both become 3个苹果
        ("三个苹果", "3个苹果", "zh", 0.0, "cer"),
        # traditional characters, numeral and punctuation at once: 我有三個蘋果。 -> 我有3个苹果
        ("我有三個蘋果。", "我有3个苹果", "zh", 0.0, "cer"),
        # full-width digit and Chinese punctuation: ３个，好！ -> 3个好 ; 三个好 -> 3个好
        ("３个，好！", "三个好", "zh", 0.0, "cer"),
        # 我有两个苹果 -> 我有2个苹果 (6 chars); 我有2个梨: 苹->梨 substitution, 果 deleted: 2/6
        ("我有两个苹果", "我有2个梨", "zh", 2 / 6, "cer"),
        # Cantonese goes through the Chinese normaliser: 個->个, 三->3 on both sides
        ("我哋有三個人", "我哋有3个人", "yue", 0.0, "cer"),
        # whisper English normaliser: contraction, number words and currency: both "it is $5"
        ("It's 5 dollars", "it is five dollars", "en", 0.0, "wer"),
        ("I won't go.", "I will not go", "en", 0.0, "wer"),
        ("Hello, World!", "hello world", "en", 0.0, "wer"),
        # one substituted word of six: the -> a
        ("The cat sat on the mat.", "the cat sat on a mat", "en", 1 / 6, "wer"),
        # Japanese: half-width katakana and the full stop fold away (NFKC)
        ("ｶﾀｶﾅです。", "カタカナです", "ja", 0.0, "cer"),
        # 東京へ行きます (7 chars) vs 東京に行きます: one substitution
        ("東京へ行きます", "東京に行きます", "ja", 1 / 7, "cer"),
        # another space-delimited language: Whisper's basic normaliser (case, punctuation)
        ("Bonjour, le monde !", "bonjour le monde", "fr", 0.0, "wer"),
        # everything deleted: 2 of 2 words
        ("hello world", "", "en", 1.0, "wer"),
    ],
)
def test_error_rate_on_hand_verified_pairs(reference, hypothesis, language, expected, kind):
    result = error_rate(reference, hypothesis, language)
    assert result is not None
    assert result.kind == kind
    assert result.value == pytest.approx(expected, abs=1e-9)
    assert result.value == pytest.approx(result.edits / result.units, abs=1e-12)


def test_the_script_of_the_reference_wins_over_the_conversation_language():
    # a Chinese request answered in English is scored by English words, not characters
    result = error_rate("Hello there, friend.", "hello there friend", "zh")
    assert (result.kind, result.value) == ("wer", 0.0)
    # a Chinese answer in an "en" conversation is scored by characters
    assert error_rate("你好世界", "你好", "en").kind == "cer"
    assert resolve_language("こんにちは世界", None) == "ja"
    assert resolve_language("请给我看", None) == "zh"


def test_both_sides_use_the_reference_normaliser():
    # the hypothesis drifted into Latin script: it is still compared character by character against the Chinese
    result = error_rate("你好", "ni hao", "zh")
    assert result.kind == "cer"
    assert result.value == pytest.approx(5 / 2, abs=1e-9)  # "nihao" vs 你好: 2 substitutions + 3 insertions over 2 chars


def test_empty_reference_is_not_computable():
    assert error_rate("", "anything", "en") is None
    assert error_rate("。！", "你好", "zh") is None


def test_normalised_forms():
    assert normalise("請給我三個蘋果！", "zh") == "请给我3个苹果"
    assert normalise("It's  FIVE dollars.", "en") == "it is $5"
    assert normalise("ＡＢ、ｶﾀｶﾅ", "ja") == "abカタカナ"


@pytest.mark.parametrize(
    ("code", "family"), [("zh", "zh"), ("yue", "zh"), ("zh-sichuan", "zh"), ("zh_TW", "zh"), ("en-US", "en"), (None, None)]
)
def test_language_family(code, family):
    assert language_family(code) == family


def test_the_table_of_hard_pairs_covers_every_language():
    counts = {lang: sum(row["language"] == lang for row in PAIRS) for lang in ("en", "zh", "zh-TW", "yue", "ja")}
    assert len(PAIRS) >= 60
    assert min(counts.values()) >= 8, counts
    # no stray tab (extra columns land under the key None) and no missing column (value None)
    assert all(None not in row and None not in row.values() for row in PAIRS)


@pytest.mark.parametrize("row", PAIRS, ids=PAIR_IDS)
def test_hand_counts_agree_with_jiwer_on_the_hand_normalised_forms(row):
    # checks the table itself, independently of stepeval: jiwer on the hand-written canonical forms
    if row["kind"] == "cer":
        out = jiwer.process_characters(row["ref_norm"], row["hyp_norm"])
    else:
        out = jiwer.process_words(row["ref_norm"], row["hyp_norm"])
    assert out.substitutions + out.deletions + out.insertions == row["edits"]
    assert out.substitutions + out.deletions + out.hits == row["units"]


@pytest.mark.parametrize("row", PAIRS, ids=PAIR_IDS)
def test_error_rate_on_the_table_of_hard_pairs(row):
    result = error_rate(row["reference"], row["hypothesis"], row["language"])
    assert result is not None
    assert (result.kind, result.edits, result.units) == (row["kind"], row["edits"], row["units"])
    assert result.value == pytest.approx(row["edits"] / row["units"], abs=1e-12)
    assert normalise(row["reference"], row["language"]) == row["ref_norm"]


def _plain_whisper_rate(row) -> float:
    """What whisper-normalizer + jiwer alone give (no project rules)."""
    if row["language"] == "en":
        norm = EnglishTextNormalizer()
        return jiwer.wer(norm(row["reference"]), norm(row["hypothesis"]))
    norm = BasicTextNormalizer()
    if row["kind"] == "wer":
        return jiwer.wer(norm(row["reference"]), norm(row["hypothesis"]))
    ref, hyp = ("".join(norm(text).split()) for text in (row["reference"], row["hypothesis"]))
    return jiwer.cer(ref, hyp)


@pytest.mark.parametrize("row", PAIRS, ids=PAIR_IDS)
def test_rows_differ_from_plain_whisper_normalizer_exactly_where_a_note_says_so(row):
    baseline = _plain_whisper_rate(row)
    expected = row["edits"] / row["units"]
    if row["note"]:
        assert baseline != pytest.approx(expected, abs=1e-12), row["note"]
    else:
        assert baseline == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "language", "expected"),
    [
        ("12.5元", "125元", "zh", 1 / 5),  # 12.5元: 5 characters, the point deleted
        ("3.5度", "35度", "zh", 1 / 4),  # 3.5度: 4 characters, the point deleted
        ("10:30", "1030", "zh", 1 / 5),  # 10:30: 5 characters, the colon deleted
        ("我们一起去", "我们1起去", "zh", 1 / 5),  # 一 -> 1 substituted: 一起 is a word, not a number
        ("这个一样", "这个1样", "zh", 1 / 4),  # 一样 likewise
    ],
)
def test_the_failures_named_in_the_issue_count_as_errors(reference, hypothesis, language, expected):
    assert error_rate(reference, hypothesis, language).value == pytest.approx(expected, abs=1e-12)


def test_percent_in_words_matches_the_percent_sign():
    assert error_rate("百分之五十", "50%", "zh").value == 0.0
    assert normalise("百分之五十", "zh") == "50%"


def test_words_with_numeral_characters_are_left_alone():
    text = "我们一起去，一样的，统一，唯一，一些，一下，一直，一定，一点儿，星期一，万一，千万"
    assert normalise(text, "zh") == text.replace("，", "")


def test_corpus_error_rate_is_total_edits_over_total_units():
    rates = [
        error_rate("the cat sat on the mat", "the cat sat on a mat", "en"),  # 1 edit over 6 words
        error_rate("hello world", "", "en"),  # 2 deletions over 2 words
        None,  # a turn whose rate could not be computed is skipped
        error_rate("hello there", "hello there", "en"),  # 0 over 2
    ]
    pooled = corpus_error_rate(rates)
    # (1 + 2 + 0) / (6 + 2 + 2) = 0.3, while the mean of the per-turn rates is (1/6 + 1 + 0) / 3 = 0.3889
    assert (pooled.edits, pooled.units, pooled.kind, pooled.language, pooled.unit) == (3, 10, "wer", "en", "word")
    assert pooled.value == pytest.approx(0.3, abs=1e-12)


def test_corpus_error_rate_over_characters_and_over_mixed_units():
    cer = [
        error_rate("12.5元", "125元", "zh"),  # 1 over 5 characters
        error_rate("東京へ行きます", "東京に行きます", "ja"),  # 1 over 7
    ]
    pooled = corpus_error_rate(cer)
    assert (pooled.edits, pooled.units, pooled.kind, pooled.language, pooled.unit) == (2, 12, "cer", "mixed", "char")
    mixed = corpus_error_rate([*cer, ErrorRate(0.5, "wer", "en", 1, 2)])
    assert (mixed.edits, mixed.units, mixed.kind, mixed.unit) == (3, 14, "mixed", "mixed")
    assert corpus_error_rate([]) is None
    assert corpus_error_rate([None]) is None
