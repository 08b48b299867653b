"""Per-language text normalisation and error rates (WER for space-delimited languages, CER for
Chinese, Cantonese and Japanese), so that an error rate counts recognition errors, not spelling,
script or formatting choices.

Order matters: numbers are brought to one canonical form *before* punctuation is stripped, so the
separators that carry meaning survive ("3.5" != "35", "10:30" != "1030", "50%" != "50").

- English: numbers kept whole (times "10:30", negatives "-5", "o'clock" protected from Whisper's
  quirks), then OpenAI Whisper's ``EnglishTextNormalizer`` (``whisper-normalizer``): case,
  punctuation, spelled-out numbers and currencies, contractions, British/American spelling.
- Chinese / Cantonese: NFKC (full-width -> half-width), traditional -> simplified (OpenCC ``t2s``),
  Chinese numerals that are numbers -> Arabic digits (the rule in ``_numbers``; words such as 一起,
  一样, 统一 stay), decimals, percentages, times, dates, money and temperatures to one form, then
  punctuation and spaces removed (except inside numbers), Latin lower-cased.
- Japanese: NFKC (half-width kana -> full-width, full-width ASCII -> ASCII), the same number rule
  with Japanese counters, punctuation and spaces removed (except inside numbers).
- Any other language: numbers with separators kept whole, then Whisper's ``BasicTextNormalizer``.

The language comes from the caller (the dataset's field); when the reference text's script
contradicts it (a Chinese prompt answered in English), the script wins.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

import jiwer

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_LATIN = re.compile(r"[A-Za-z]")
_WORDS = re.compile(r"[^\W\d_]+")  # runs of letters (digits are not a script)


class ErrorRate(NamedTuple):
    """One error rate with its raw counts, so rates can be pooled over a corpus (``corpus_error_rate``)."""

    value: float  # edits / units
    kind: str  # "wer" | "cer" (or "mixed" for a pooled rate over both)
    language: str  # the normaliser used: en, zh, ja or basic (or "mixed")
    edits: int  # substitutions + deletions + insertions
    units: int  # reference words (wer) or characters (cer)

    @property
    def unit(self) -> str:
        """What ``units`` counts: "word", "char" or "mixed"."""
        return {"wer": "word", "cer": "char"}.get(self.kind, "mixed")


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


# ---------------------------------------------------------------- numbers (Chinese and Japanese)
#
# The rule: a run of Chinese numeral characters becomes Arabic digits only where it is a number:
#   1. after 第 (ordinal), after 百分之 / 分之 (percent, fraction);
#   2. a decimal 三点五 (digits after 点, zh only) or a time 十点半 / 十点三十分 / 10时5分 / 10時半;
#   3. a run with a place value that parses (二十五, 一百零五, 两千, 一万二): it starts with a digit or 十;
#      百万, 千万, 万一 (which start with a place value) stay words;
#   4. a digit-by-digit run of three or more (二〇二四, 一三八零零一三八零零零: years, phone numbers);
#      two digits (三四个 = "three or four") stay;
#   5. a single numeral (一, 两, 三, ...) only before a unit or measure word (个, 元, 度, 年, 月, 号, 次,
#      分钟, ... ; 一点 "a bit", 十分 "very" and 一番 "best" are words), or standing alone: no Han/kana
#      on either side, or beside an arithmetic / answer word (是, 等于, 加, 到, 比, ...).
# So 一起, 一样, 一些, 一直, 统一, 唯一, 星期一 keep their 一. Arabic forms are then made one: 5万 -> 50000,
# 百分之50 -> 50%, 12块5 -> 12.5元, ¥12.5 -> 12.5元, 零下5度 / 5°C / 5摄氏度 -> -5度 / 5度, 3月5号 -> 3月5日,
# 2024-03-05 -> 2024年3月5日, 1,000 -> 1000. The decimal point, the colon of a time, the % sign and a
# leading minus stay as characters (each counts one unit in CER).

_DIGIT_CHARS = "零〇一二两三四五六七八九幺"
_PLACE_CHARS = "十百千万亿億"
_DIGIT_VALUE = dict(zip(_DIGIT_CHARS, "0012234567891", strict=True))
_RUN = re.compile(f"[{_DIGIT_CHARS}{_PLACE_CHARS}]+")
_NUM = r"\d+(?:\.\d+)?"

_ZH_UNITS = sorted(
    "点钟 分钟 小时 公里 千米 厘米 毫米 公斤 千克 毫升 美元 欧元 英镑 日元 港元 港币 块钱 星期 个月 周岁 分之 平方 立方 摄氏度 "
    "个 位 名 人 只 条 本 张 件 辆 台 把 杯 瓶 碗 次 遍 趟 倍 元 角 毛 分 块 度 岁 年 月 日 号 天 周 秒 点 米 克 斤 升 吨 "
    "层 楼 页 章 节 集 届 场 颗 棵 朵 匹 双 对 套 份 首 篇 句 段 门 间 座 所 支 枝 根 片 种 类 成 折 多 余 蚊 粒 级 餐 顿 "
    "期 组 队 款 项 幅".split(),
    key=len,
    reverse=True,
)
_JA_UNITS = sorted(
    "ヶ月 か月 カ月 ヵ月 時間 週間 日間 年間 分間 秒間 キロ メートル センチ グラム パーセント "
    "つ 個 人 円 年 月 日 時 分 秒 度 回 歳 才 本 枚 匹 台 冊 階 番 杯 件 名 週 倍 点 位 号 頭 羽 軒 着 足".split(),
    key=len,
    reverse=True,
)
# (single numeral, what follows) that are words, not numbers
_WORD_EXCEPTIONS = (("一", "点"), ("十", "分"), ("一", "番"), ("一", "時的"))
_NOT_EXCEPTIONS = ("点钟", "分钟", "分之", "分間")
_ZH_BEFORE = sorted("第 分之 是 为 等于 加 减 乘 乘以 除以 到 至 或 比".split(), key=len, reverse=True)
_ZH_AFTER = sorted("加 减 乘 除 等于 到 至 或 比".split(), key=len, reverse=True)
_JA_BEFORE = ["第"]
_JA_AFTER: list[str] = []


def _is_cjk(char: str) -> bool:
    return bool(_HAN.match(char) or _KANA.match(char))


def _cn_int(run: str) -> str | None:
    """Arabic digits for a Chinese numeral run, or None when it is not a number."""
    import cn2an

    run = run.replace("億", "亿")
    if not any(c in _PLACE_CHARS for c in run):
        return "".join(_DIGIT_VALUE[c] for c in run)
    if run[0] in "百千万亿":
        return None
    try:
        value = cn2an.cn2an(run.replace("〇", "零").replace("幺", "一"), "normal")
    except Exception:  # cn2an rejects idioms such as 一五一十: they stay words
        return None
    return str(int(value)) if float(value).is_integer() else None


def _number_or_digits(text: str) -> str | None:
    return text if text.isdigit() else _cn_int(text)


def _time(hour: str, minute: int) -> str | None:
    h = _number_or_digits(hour)
    if h is None or not 0 <= int(h) <= 24 or not 0 <= minute < 60:
        return None
    return f"{int(h)}:{minute:02d}"


def _times(text: str, hour_marks: str) -> str:
    """十点半 / 10点30分 / 十点三十 / 三点一刻 / 10時半 -> 10:30 (a time, not a decimal or a duration)."""
    hour = rf"(\d{{1,2}}|[{_DIGIT_CHARS}十]{{1,3}})"
    minute = rf"(\d{{1,2}}|[{_DIGIT_CHARS}十]{{1,3}})"

    def half(m: re.Match) -> str:
        return _time(m.group(1), 30) or m.group(0)

    def quarter(m: re.Match) -> str:
        return _time(m.group(1), 15 * int(_DIGIT_VALUE[m.group(2)])) or m.group(0)

    def minutes(m: re.Match) -> str:
        value = _number_or_digits(m.group(2))
        return (_time(m.group(1), int(value)) if value is not None else None) or m.group(0)

    marks = f"[{hour_marks}]"
    text = re.sub(rf"{hour}{marks}半", half, text)
    text = re.sub(rf"{hour}{marks}([一三])刻", quarter, text)
    text = re.sub(rf"{hour}{marks}{minute}分(?!钟|之|間)", minutes, text)
    # 十点三十 (no 分): minutes with a place value are not decimal digits, so this is a time
    return re.sub(rf"{hour}{marks}([{_DIGIT_CHARS}]?十[{_DIGIT_CHARS}]?)(?![{_DIGIT_CHARS}{_PLACE_CHARS}分])", minutes, text)


def _decimals(text: str) -> str:
    """三点五 -> 3.5, 零点零五 -> 0.05 (the digits after 点 are read one by one); 一点一点 ("bit by bit") stays."""

    def decimal(m: re.Match) -> str:
        whole = _cn_int(m.group(1))
        if whole is None:
            return m.group(0)
        return f"{whole}." + "".join(_DIGIT_VALUE[c] for c in m.group(2))

    return re.sub(rf"([{_DIGIT_CHARS}{_PLACE_CHARS}]+)点([{_DIGIT_CHARS}]+)(?![点{_DIGIT_CHARS}十百千])", decimal, text)


def _money(text: str) -> str:
    """十二块五 / 十二块五毛 -> 十二块5 (the 五 after 块 is tenths of a yuan, made 12.5元 with the Arabic forms)."""
    return re.sub(
        rf"(?<=[\d{_DIGIT_CHARS}十百千万])([块元])([{_DIGIT_CHARS}])(?=[毛角]|[^\u3400-\u9fff\u3040-\u30ff]|$)",
        lambda m: m.group(1) + _DIGIT_VALUE[m.group(2)],
        text,
    )


def _runs(text: str, units: list[str], before: list[str], after: list[str]) -> str:
    """Numeral runs -> digits where they are numbers (rules 1, 3, 4, 5 of the rule above)."""
    out: list[str] = []
    last = 0
    for m in _RUN.finditer(text):
        run, head, tail = m.group(0), text[: m.start()], text[m.end() :]
        converted = None
        if head.endswith(("第", "分之")):
            converted = _cn_int(run)
        elif len(run) > 1:
            if any(c in _PLACE_CHARS for c in run) or (len(run) >= 3 and "两" not in run):
                converted = _cn_int(run)
        else:
            is_word = any(run == a and tail.startswith(b) for a, b in _WORD_EXCEPTIONS) and not tail.startswith(_NOT_EXCEPTIONS)
            alone_before = not head or not _is_cjk(head[-1]) or head.endswith(tuple(before))
            alone_after = not tail or not _is_cjk(tail[0]) or tail.startswith(tuple(after))
            if not is_word and (tail.startswith(tuple(units)) or (alone_before and alone_after)):
                converted = _cn_int(run)
        out.append(text[last : m.start()] + (converted if converted is not None else run))
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def _expand(m: re.Match) -> str:
    value = Decimal(m.group(1)) * {"百": 100, "千": 1000, "万": 10**4, "亿": 10**8, "億": 10**8}[m.group(2)]
    return str(int(value)) if value == value.to_integral_value() else m.group(0)


def _arabic_forms(text: str, language: str) -> str:
    """One written form for numbers already in digits."""
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000 -> 1000
    text = re.sub(rf"({_NUM})([百千万亿億])(?![\d{_DIGIT_CHARS}{_PLACE_CHARS}])", _expand, text)  # 5万 -> 50000
    text = re.sub(rf"({_NUM})\s*(?:°c|°|摄氏度|度c)", r"\1度", text)  # temperatures
    text = re.sub(r"(?<![\d.])0(\d)(?=[月日号])", r"\1", text)  # 03月05日 -> 3月5日
    text = re.sub(
        r"(?<!\d)(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![\d.])",
        lambda m: f"{m.group(1)}年{int(m.group(3))}月{int(m.group(4))}日",
        text,
    )
    if language == "ja":
        text = re.sub(rf"¥\s*({_NUM})", r"\1円", text)
        text = re.sub(rf"({_NUM})\s*パーセント", r"\1%", text)
        text = re.sub(r"(\d{1,2})時(\d{1,2})分(?!間)", lambda m: _time(m.group(1), int(m.group(2))) or m.group(0), text)
        text = re.sub(r"(\d{1,2})時半", lambda m: _time(m.group(1), 30) or m.group(0), text)
        return text
    text = text.replace("百分之百", "100%")
    text = re.sub(rf"百分之({_NUM})", r"\1%", text)
    text = re.sub(r"(\d{1,2})月(\d{1,2})号", r"\1月\2日", text)
    text = re.sub(rf"(?:负|零下)\s*({_NUM})", r"-\1", text)
    text = re.sub(rf"¥\s*({_NUM})", r"\1元", text)
    text = re.sub(rf"\$\s*({_NUM})", r"\1美元", text)
    text = re.sub(rf"({_NUM})块钱", r"\1元", text)
    text = re.sub(r"(\d+)[块元](\d)[毛角]", r"\1.\2元", text)  # 12块5毛 -> 12.5元
    text = re.sub(r"(\d+)块(\d)(?![\d.])", r"\1.\2元", text)  # 十二块五 -> 12.5元
    return re.sub(r"元钱", "元", text)


def _numbers(text: str, language: str) -> str:
    """Chinese (language zh) or Japanese (ja) numbers -> one canonical Arabic form (see the rule above)."""
    if language == "ja":
        text = _times(text, "時")
        text = _runs(text, _JA_UNITS, _JA_BEFORE, _JA_AFTER)
    else:
        text = text.replace("廿", "二十").replace("卅", "三十")  # Cantonese 廿五 = 25
        text = _times(text, "点时")
        text = _decimals(text)
        text = _money(text)
        text = _runs(text, _ZH_UNITS, _ZH_BEFORE, _ZH_AFTER)
    return _arabic_forms(text, language)


# ---------------------------------------------------------------- punctuation

# a number whose separators carry meaning: -5, 3.5, 10:30, 3/4, 50%
_NUMERIC_TOKEN = re.compile(r"(?:(?<![0-9a-z])-)?\d+(?:[.:/]\d+)*%?")


def _strip_punctuation(text: str) -> str:
    """Punctuation, symbols and separators -> spaces, except inside numeric tokens."""
    out: list[str] = []
    last = 0
    for m in _NUMERIC_TOKEN.finditer(text):
        out.append(_blank(text[last : m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_blank(text[last:]))
    return "".join(out)


def _blank(text: str) -> str:
    return "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)


def _chinese(text: str) -> str:
    text = _t2s().convert(unicodedata.normalize("NFKC", text)).lower()
    return "".join(_strip_punctuation(_numbers(text, "zh")).split())


def _japanese(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(_strip_punctuation(_numbers(text, "ja")).split())


# ---------------------------------------------------------------- space-delimited languages


def _protect(text: str, pattern: str, kept: list[str]) -> str:
    """Replace matches with letter-only placeholders that Whisper's normalisers leave alone."""

    def hold(m: re.Match) -> str:
        kept.append(m.group(0).lower().replace("’", "'"))
        return " xqx" + "".join("abcdefghij"[int(d)] for d in str(len(kept) - 1)) + "xqx "

    return re.sub(pattern, hold, text, flags=re.IGNORECASE)


def _restore(text: str, kept: list[str]) -> str:
    return re.sub(r"xqx([a-j]+)xqx", lambda m: kept[int("".join(str("abcdefghij".index(c)) for c in m.group(1)))], text)


def _spaced(text: str, kind: str) -> str:
    """Whisper's English / basic normaliser, with the numbers it would break kept whole: 10:30 (Whisper: "10 30",
    while "ten thirty" becomes "1030"), -5 (Whisper drops the minus), o'clock (Whisper reads the o as zero),
    and for other languages 3.5 / 3,5 / 50% (the basic normaliser splits them)."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"(\d)\s+%", r"\1%", text)
    kept: list[str] = []
    text = _protect(text, r"(?<![\d:])\d{1,2}:\d{2}(?![\d:])", kept)
    if kind == "en":
        text = _protect(text, r"\bo['’]clock\b", kept)
        text = re.sub(r"(?<![\w.])-(?=\d)", "minus ", text)
        normalised = _english()(text)
    else:
        text = _protect(text, r"(?:(?<![\w.,])-)?\d+(?:[.,]\d+)+%?|\d+%", kept)
        normalised = _basic()(text)
    return " ".join(_restore(normalised, kept).split())


# ---------------------------------------------------------------- public API


def normalise(text: str, language: str | None = None) -> str:
    """Normalised text: words separated by single spaces (en, basic) or characters without spaces (zh, ja)."""
    return _normalise(text, resolve_language(text, language))


def _normalise(text: str, kind: str) -> str:
    if kind == "zh":
        return _chinese(text)
    if kind == "ja":
        return _japanese(text)
    return _spaced(text, kind)


def error_rate(reference: str, hypothesis: str, language: str | None = None) -> ErrorRate | None:
    """WER or CER of ``hypothesis`` against ``reference`` after normalising both the same way, with the
    edit and reference-unit counts; None when the reference is empty after normalisation (not computable)."""
    kind = resolve_language(reference, language)
    ref = _normalise(reference, kind)
    if not ref:
        return None
    hyp = _normalise(hypothesis, kind)  # the reference's normaliser, whatever script the hypothesis is in
    if kind in ("zh", "ja"):
        out = jiwer.process_characters(ref, hyp)
        rate_kind = "cer"
    else:
        out = jiwer.process_words(ref, hyp)
        rate_kind = "wer"
    edits = out.substitutions + out.deletions + out.insertions
    units = out.substitutions + out.deletions + out.hits
    return ErrorRate(edits / units, rate_kind, kind, edits, units)


def corpus_error_rate(rates: Iterable[ErrorRate | None]) -> ErrorRate | None:
    """Corpus-level rate: total edits over total reference units (as the Whisper paper and VoiceBench report),
    not the mean of per-turn rates, so a long reply weighs more than a short one. None entries (not
    computable) are skipped; None when nothing is left. Pooling WER with CER gives kind "mixed"."""
    rates = [r for r in rates if r is not None]
    units = sum(r.units for r in rates)
    if not units:
        return None
    edits = sum(r.edits for r in rates)
    kinds = {r.kind for r in rates}
    languages = {r.language for r in rates}
    return ErrorRate(
        edits / units,
        kinds.pop() if len(kinds) == 1 else "mixed",
        languages.pop() if len(languages) == 1 else "mixed",
        edits,
        units,
    )
