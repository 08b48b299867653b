"""Text normalisation and error rates: WER for space-delimited languages, CER for CJK."""

from __future__ import annotations

import re
import unicodedata

import jiwer

CJK_LANGUAGES = {"zh", "yue", "ja", "zh-sichuan"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def language_family(code: str | None) -> str | None:
    """zh, zh-sichuan and yue are one family for language-match purposes (whisper labels
    Cantonese and dialects inconsistently)."""
    if not code:
        return None
    code = code.lower()
    return "zh" if code.startswith("zh") or code == "yue" else code.split("-")[0]


def uses_characters(text: str, language: str | None = None) -> bool:
    """CER applies when the text is mostly CJK characters (or the language says so)."""
    if language and language.lower() in CJK_LANGUAGES:
        return True
    letters = [c for c in text if c.isalnum()]
    return bool(letters) and sum(bool(_CJK.match(c)) for c in letters) / len(letters) > 0.5


def normalise(text: str, characters: bool) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    text = " ".join(text.split())
    if characters:
        return text.replace(" ", "")
    return text


def error_rate(reference: str, hypothesis: str, language: str | None = None) -> tuple[float, str] | None:
    """(rate, "wer"|"cer") after normalisation; None when the reference is empty (not computable)."""
    characters = uses_characters(reference, language)
    ref, hyp = normalise(reference, characters), normalise(hypothesis, characters)
    if not ref:
        return None
    if characters:
        return float(jiwer.cer(ref, hyp)), "cer"
    return float(jiwer.wer(ref, hyp)), "wer"
