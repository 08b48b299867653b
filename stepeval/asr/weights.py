"""Whether a Whisper model's weights are at hand, found without loading them.

faster-whisper fetches a hub model's weights when the model is first loaded, which happens at the first
transcription, after the replay. On a machine without network every ASR record would then fail: the
weights are looked up (and, where downloads are allowed, fetched) before the first turn instead.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS = "model.bin"  # what a CTranslate2 Whisper folder cannot do without


def offline() -> bool:
    """Hugging Face downloads are switched off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def whisper_weights(model: str, cache_dir: str | None = None, allow_download: bool | None = None) -> Path:
    """The folder holding ``model``'s weights: a local CTranslate2 folder, or the Hugging Face cache's copy of a
    faster-whisper size (``large-v3``) or hub id, downloaded now if it is missing and downloads are allowed
    (``allow_download``; default: unless ``HF_HUB_OFFLINE``). Raises RuntimeError saying what is missing and where."""
    from faster_whisper.utils import available_models, download_model
    from huggingface_hub import constants

    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / WEIGHTS).is_file():
            raise RuntimeError(f"Whisper folder {local} has no {WEIGHTS}: not a CTranslate2 Whisper model")
        return local
    if "/" not in model and model not in available_models():
        sizes = ", ".join(available_models())
        raise ValueError(f"Whisper model {model!r} is neither a folder nor a faster-whisper size ({sizes})")
    where = cache_dir or constants.HF_HUB_CACHE
    try:
        found = Path(download_model(model, local_files_only=True, cache_dir=cache_dir))
        if (found / WEIGHTS).is_file():
            return found
    except Exception:  # noqa: BLE001 - huggingface_hub's "not in the cache" errors vary by version
        pass
    missing = f"Whisper {model}: its weights are not in the Hugging Face cache ({where})"
    if not (not offline() if allow_download is None else allow_download):
        raise RuntimeError(f"{missing} and downloads are off (HF_HUB_OFFLINE)")
    try:
        found = Path(download_model(model, cache_dir=cache_dir))
    except Exception as err:  # noqa: BLE001 - no network, no such repo, a full disk: all say the same to the user
        why = " ".join(f"{type(err).__name__}: {err}".split())  # huggingface_hub's messages run over several lines
        raise RuntimeError(f"{missing} and could not be downloaded ({why})") from None
    if not (found / WEIGHTS).is_file():
        raise RuntimeError(f"Whisper {model}: the download in {found} has no {WEIGHTS}")
    return found
