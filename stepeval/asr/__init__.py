"""Speech recognition: engines (faster-whisper, Paraformer), routing by language, and the per-language
text normalisation that error rates are computed on. Used by scoring and by the cascade backend alike."""

from stepeval.asr.engines import Transcript, WhisperASR, transcript_fingerprint
from stepeval.asr.text_norm import error_rate, language_family

__all__ = ["Transcript", "WhisperASR", "error_rate", "language_family", "transcript_fingerprint"]
