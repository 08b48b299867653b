"""What produced a run: code revision and package versions (for the manifest)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "stepeval",
    "hydra-core",
    "omegaconf",
    "numpy",
    "pandas",
    "pyarrow",
    "soundfile",
    "soxr",
    "jiwer",
    "faster-whisper",
    "ctranslate2",
    "huggingface-hub",
    "openai",
    "torch",
    "transformers",
)


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_revision() -> dict:
    """The git commit of the stepeval checkout (and whether it had uncommitted changes), if any."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "dirty": None}
    return {"git_commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
