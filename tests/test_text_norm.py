"""Per-language normalisation and error rates on hand-verified pairs: each expected value was worked
out by reading the pair (normalised forms and edit counts in the comments), not by running the code."""

from __future__ import annotations

import pytest

from stepeval.asr.text_norm import error_rate, language_family, normalise, resolve_language


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
