"""Per-language text normalisation and error rates (WER for space-delimited languages, CER for
Chinese, Cantonese and Japanese), so that an error rate counts recognition errors, not spelling,
script or formatting choices.

- English: OpenAI Whisper's ``EnglishTextNormalizer`` (``whisper-normalizer``): case, punctuation,
  spelled-out and written numbers and currencies, contractions, British/American spelling.
- Chinese / Cantonese: NFKC (full-width digits and letters), traditional -> simplified (OpenCC
  ``t2s``), Chinese numerals -> Arabic (``cn2an``), punctuation and spaces removed, Latin lower-cased.
- Japanese: NFKC (half-width kana -> full-width, full-width ASCII -> ASCII), punctuation and spaces
  removed, Latin lower-cased.
- Any other language: Whisper's ``BasicTextNormalizer`` (case, punctuation, bracketed markers).

The language comes from the caller (the dataset's field); when the reference text's script
contradicts it (a Chinese prompt answered in English), the script wins.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

import jiwer

CJK_LANGUAGES = {"zh", "yue", "ja", "cmn"}
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_LATIN = re.compile(r"[A-Za-z]")
_WORDS = re.compile(r"[^\W\d_]+")  # runs of letters (digits are not a script)


class ErrorRate(NamedTuple):
    value: float
    kind: str  # "wer" | "cer"
    language: str  # the normaliser used: en, zh, ja or basic


def language_family(code: str | None) -> str | None:
    """zh, zh-*, cmn and yue are one family for language-match purposes (whisper labels Cantonese
    and dialects inconsistently)."""
    if not code:
        return None
    code = code.lower().replace("_", "-")
    base = code.split("-")[0]
    return "zh" if base in ("zh", "yue", "cmn") else base


def is_chinese(code: str | None) -> bool:
    return language_family(code) == "zh"


def script_language(text: str) -> str | None:
    """ja / zh when most units are CJK characters (any kana means Japanese), en when most are Latin words,
    else None. A unit is one CJK character or one word of other letters (a CJK character is about a word)."""
    text = unicodedata.normalize("NFKC", text)
    cjk = [c for c in text if _HAN.match(c) or _KANA.match(c)]
    words = _WORDS.findall(_HAN.sub(" ", _KANA.sub(" ", text)))
    if not cjk and not words:
        return None
    if len(cjk) > len(words):
        return "ja" if any(_KANA.match(c) for c in cjk) else "zh"
    latin = sum(bool(_LATIN.match(w)) for w in words)
    return "en" if latin > len(words) / 2 else None


def resolve_language(text: str, language: str | None) -> str:
    """Which normaliser applies: en, zh, ja or basic."""
    declared = language_family(language)
    if declared == "ja":
        declared_kind = "ja"
    elif declared == "zh":
        declared_kind = "zh"
    elif declared == "en":
        declared_kind = "en"
    else:
        declared_kind = "basic" if declared else None
    seen = script_language(text)
    if declared_kind in ("zh", "ja"):
        # a CJK request answered in another script is normalised for that script
        return declared_kind if seen in (None, "zh", "ja") else (seen or "basic")
    if seen in ("zh", "ja"):
        return seen
    return declared_kind or seen or "basic"


def uses_characters(text: str, language: str | None = None) -> bool:
    """CER applies to Chinese, Cantonese and Japanese (by language, or by script when they disagree)."""
    return resolve_language(text, language) in ("zh", "ja")


@functools.lru_cache(maxsize=1)
def _english():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@functools.lru_cache(maxsize=1)
def _basic():
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


@functools.lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _strip_punctuation(text: str) -> str:
    return "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)


def _chinese(text: str) -> str:
    import cn2an

    text = _t2s().convert(unicodedata.normalize("NFKC", text)).lower()
    text = _strip_punctuation(text)
    # numerals per run of text between spaces: cn2an reads "三个" as "3个", "二十五" as "25"
    text = "".join(_numerals(part, cn2an) for part in text.split())
    return text


def _numerals(part: str, cn2an) -> str:
    try:
        return cn2an.transform(part, "cn2an")
    except Exception:  # cn2an rejects some odd inputs; the text stays as it was
        return part


def _japanese(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(_strip_punctuation(text).split())


def normalise(text: str, language: str | None = None) -> str:
    """Normalised text: words separated by single spaces (en, basic) or characters without spaces (zh, ja)."""
    return _normalise(text, resolve_language(text, language))


def _normalise(text: str, kind: str) -> str:
    if kind == "zh":
        return _chinese(text)
    if kind == "ja":
        return _japanese(text)
    normaliser = _english() if kind == "en" else _basic()
    return " ".join(normaliser(unicodedata.normalize("NFKC", text)).split())


def error_rate(reference: str, hypothesis: str, language: str | None = None) -> ErrorRate | None:
    """WER or CER of ``hypothesis`` against ``reference`` after normalising both the same way;
    None when the reference is empty after normalisation (not computable)."""
    kind = resolve_language(reference, language)
    ref = _normalise(reference, kind)
    if not ref:
        return None
    hyp = _normalise(hypothesis, kind)  # the reference's normaliser, whatever script the hypothesis is in
    if kind in ("zh", "ja"):
        return ErrorRate(float(jiwer.cer(ref, hyp)), "cer", kind)
    return ErrorRate(float(jiwer.wer(ref, hyp)), "wer", kind)
