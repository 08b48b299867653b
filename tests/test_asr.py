"""Real ASR (the packaged multilingual Whisper base, offline) on committed espeak-ng clips, the
per-language router, and the Paraformer seams that can be checked without its weights."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
from hydra.utils import instantiate

from stepeval import audio as audio_io
from stepeval.asr.engines import WhisperASR, transcript_fingerprint
from stepeval.asr.paraformer import ParaformerASR, join_output
from stepeval.asr.router import LanguageRouter
from stepeval.asr.text_norm import error_rate, normalise

pytestmark = pytest.mark.slow  # whisper base loads

DATA = Path(__file__).parent / "data"
CLIPS = json.loads((DATA / "clips.json").read_text(encoding="utf-8"))
BASE = {"model": "packaged:whisper-base", "device": "cpu", "compute_type": "int8", "cpu_threads": 2, "beam_size": 1}


def clip(name: str):
    return audio_io.read(DATA / CLIPS[name]["file"])


@pytest.fixture(scope="module")
def whisper() -> WhisperASR:
    engine = WhisperASR(**BASE)
    engine.check()
    return engine


@pytest.fixture(scope="module")
def router(whisper) -> LanguageRouter:
    return LanguageRouter(chinese=WhisperASR(**BASE, language="zh"), default=whisper)


def test_english_clip_is_transcribed_with_a_low_word_error_rate(whisper):
    heard = whisper.transcribe(*clip("en_price"))
    assert heard.language == "en"
    result = error_rate(CLIPS["en_price"]["text"], heard.text, "en")
    assert result.kind == "wer"
    assert result.value <= 1 / 7, heard.text  # "It costs five dollars and twenty cents." is 7 words: at most one wrong


def test_chinese_clip_error_rate_counts_recognition_errors_not_script_or_numerals(whisper):
    reference = CLIPS["zh_apples"]["text"]  # 请给我三个苹果。
    heard = whisper.transcribe(*clip("zh_apples"))
    assert heard.language == "zh"
    result = error_rate(reference, heard.text, "zh")
    assert result.kind == "cer"
    # whisper base writes this clip in traditional characters; normalised, the request itself is recognised
    assert normalise(heard.text, "zh").startswith("请给我3个"), heard.text
    assert result.value <= 3 / 7, heard.text
    raw = jiwer.cer(reference.rstrip("。"), heard.text.strip("。 "))
    assert raw > result.value  # without normalisation, script and numeral choices count as errors


def test_silence_gives_an_empty_transcript(whisper):
    heard = whisper.transcribe(np.zeros(2 * 16000, dtype=np.float32), 16000)
    assert heard.text == ""


def test_forced_decoding_language_still_reports_the_language_heard():
    forced = WhisperASR(**BASE, language="zh")
    heard = forced.transcribe(*clip("en_price"))
    assert heard.language == "en"  # decoded as zh, but the reply was English: language_match must see that


def test_router_sends_chinese_to_the_chinese_engine_and_the_rest_to_the_default(router):
    zh = router.transcribe(*clip("zh_apples"), language="zh")
    en = router.transcribe(*clip("en_price"), language="en")
    assert zh.engine == "chinese:faster-whisper"
    assert en.engine == "default:faster-whisper"
    assert error_rate(CLIPS["en_price"]["text"], en.text, "en").value <= 1 / 7
    for code in ("yue", "zh-sichuan", "zh-TW"):
        assert router.route(*clip("en_price"), code)[0] == "chinese"  # by the dataset's field, no detection
    assert router.route(*clip("zh_apples"), "en")[0] == "default"


def test_router_detects_the_language_when_the_dataset_has_none(router):
    branch, detected, probability = router.route(*clip("zh_apples"), None)
    assert (branch, detected) == ("chinese", "zh")
    assert 0 < probability <= 1
    assert router.transcribe(*clip("en_price"), language=None).engine == "default:faster-whisper"


def test_router_rejects_bad_configuration(whisper):
    with pytest.raises(ValueError, match="route_by"):
        LanguageRouter(chinese=whisper, default=whisper, route_by="sometimes")
    with pytest.raises(ValueError, match="asr.engine.chinese"):
        LanguageRouter(chinese={"model": "paraformer-zh"}, default=whisper)


def test_transcript_fingerprint_includes_the_language_only_for_routers(whisper, router):
    replay = {"audio_sha256": "ab" * 32, "language": "zh"}
    other = {**replay, "language": "en"}
    assert transcript_fingerprint(whisper, replay) == transcript_fingerprint(whisper, other)
    assert transcript_fingerprint(router, replay) != transcript_fingerprint(router, other)


def test_paraformer_reports_missing_funasr_with_the_install_command():
    try:
        import funasr  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only where FunASR is installed
        pytest.skip("funasr is installed here: the missing-package error cannot occur")
    engine = ParaformerASR()
    with pytest.raises(ImportError, match="pip install funasr"):
        engine.check()
    with pytest.raises(ImportError, match="pip install funasr"):
        engine.transcribe(*clip("zh_apples"))
    assert engine.identity()["model"] == "paraformer-zh"


def test_paraformer_output_is_joined_without_spaces_between_characters():
    result = [{"key": "rand_key_1", "text": "欢 迎 大 家 来 到 hello world 社 区"}, {"key": "k2", "text": "好"}]
    assert join_output(result) == "欢迎大家来到 hello world 社区好"
    with pytest.raises(ValueError, match="unexpected FunASR output"):
        join_output({"text": "not a list"})


def test_paraformer_router_config_composes_and_fails_clearly_without_funasr():
    from hydra import compose, initialize_config_dir

    from stepeval.config import check_target, conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=["asr=paraformer_whisper_large_v3"])
    check_target(cfg.asr.engine, "asr.engine")
    engine = instantiate(cfg.asr.engine)
    assert isinstance(engine.chinese, ParaformerASR) and isinstance(engine.default, WhisperASR)
    assert engine.identity()["default"]["model"] == "large-v3"
    try:
        import funasr  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install funasr"):
            engine.check()
