"""Where dataset files come from: the Hugging Face hub, a local clone, or the bundled sample."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from stepeval.audio import file_sha256

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"


def default_cache_dir() -> Path:
    return Path(os.environ.get("STEPEVAL_CACHE", Path.home() / ".cache" / "stepeval"))


@dataclass
class DatasetFiles:
    """The files of one dataset snapshot, and where they came from (for the manifest)."""

    root: Path
    parquet: list[Path]
    archive: Path | None
    provenance: dict = field(default_factory=dict)

    def hashes(self) -> dict[str, str]:
        files = [*self.parquet, *([self.archive] if self.archive else [])]
        return {str(p.relative_to(self.root)): file_sha256(p) for p in files}


def _git_commit(path: Path) -> str | None:
    if not (path / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def from_folder(root: Path, provenance: dict, archive_name: str = "audios.tar.gz") -> DatasetFiles:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    parquet = sorted(p for p in root.rglob("*.parquet") if ".git" not in p.parts)
    if not parquet:
        raise FileNotFoundError(f"no parquet files under {root} (expected data/*.parquet)")
    archive = root / archive_name
    if archive.exists() and archive.stat().st_size < 1024 and archive.read_bytes().startswith(b"version https://git-lfs"):
        raise FileNotFoundError(f"{archive} is a Git LFS pointer, not the archive: run `git lfs pull` in {root}")
    return DatasetFiles(root, parquet, archive if archive.exists() else None, provenance)


def from_hub(repo_id: str, revision: str | None, cache_dir: Path | None = None) -> DatasetFiles:
    """Download (or reuse) a snapshot; the snapshot folder name is the resolved commit."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                repo_id=repo_id,
                repo_type="dataset",
                revision=revision,
                cache_dir=str(cache_dir) if cache_dir else None,
                allow_patterns=["*.parquet", "*.tar.gz", "README.md"],
            )
        )
    except Exception as err:  # the hub raises many types; the user needs the ids either way
        raise RuntimeError(
            f"could not fetch dataset {repo_id}@{revision or 'main'} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Offline? Clone it elsewhere and use dataset.source=local dataset.local_dir=<folder>"
        ) from err
    provenance = {"kind": "hub", "repo_id": repo_id, "revision": revision, "commit": path.name}
    return from_folder(path, provenance)


def from_local(path: Path) -> DatasetFiles:
    path = Path(path).expanduser().resolve()
    return from_folder(path, {"kind": "local", "path": str(path), "commit": _git_commit(path)})


def bundled_sample() -> DatasetFiles:
    from stepeval import __version__

    return from_folder(SAMPLE_DIR, {"kind": "sample", "package_version": __version__})


def resolve(source: str, location: str | None = None, revision: str | None = None) -> DatasetFiles:
    """``source`` is hub, local or sample; for ``stepeval data inspect`` an existing folder means local."""
    if source == "sample":
        return bundled_sample()
    if source == "local":
        if not location:
            raise ValueError("dataset.source=local needs dataset.local_dir=<folder with data/*.parquet and audios.tar.gz>")
        return from_local(Path(location))
    if source == "hub":
        if not location:
            raise ValueError("dataset.source=hub needs dataset.repo_id")
        return from_hub(location, revision)
    raise ValueError(f"dataset.source={source!r}: use hub, local or sample")
