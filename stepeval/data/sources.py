"""Where dataset files come from: the Hugging Face hub, a local clone, or a data set packaged with stepeval.

The hub path goes through Hugging Face ``datasets`` (``stepeval.data.hf``): the repository snapshot is
pinned to its resolved commit, the table is read by ``load_dataset`` into the ``datasets`` cache with
audio left undecoded. A local clone is read as it is (parquet files and ``audios.tar.gz``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stepeval.data import hashcache

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DIR = PACKAGE_DIR / "sample"
PACKAGED = {"sample": SAMPLE_DIR, "spoken_qa_mini": PACKAGE_DIR / "spoken_qa_mini"}
HUB_PATTERNS = ["*.parquet", "*.arrow", "*.jsonl", "*.csv", "*.tar.gz", "README.md", "*.yaml", "*.json"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("STEPEVAL_CACHE", Path.home() / ".cache" / "stepeval"))


@dataclass
class DatasetFiles:
    """The files of one dataset snapshot, and where they came from (for the manifest).

    ``table``: the rows already read (the ``datasets`` path); None means read ``parquet`` with pandas
    (parquet files, or JSON Lines files when the folder has no parquet).
    """

    root: Path
    parquet: list[Path]
    archive: Path | None
    provenance: dict = field(default_factory=dict)
    table: pd.DataFrame | None = None
    cache_dir: Path | None = None  # stepeval's cache (archive hashes are remembered there)

    def data_files(self) -> list[Path]:
        return [*self.parquet, *([self.archive] if self.archive else [])]

    def hashes(self) -> dict[str, str]:
        """sha256 per data file, remembered by (path, size, mtime_ns) so a resumed run does not re-hash."""
        cache = self.cache_dir or default_cache_dir()
        return {str(p.relative_to(self.root)): hashcache.sha256(p, cache) for p in self.data_files()}


def _git_commit(path: Path) -> str | None:
    if not (path / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _archive_in(root: Path, archive_name: str) -> Path | None:
    archive = root / archive_name
    if archive.exists() and archive.stat().st_size < 1024 and archive.read_bytes().startswith(b"version https://git-lfs"):
        raise FileNotFoundError(f"{archive} is a Git LFS pointer, not the archive: run `git lfs pull` in {root}")
    return archive if archive.exists() else None


def from_folder(root: Path, provenance: dict, archive_name: str = "audios.tar.gz") -> DatasetFiles:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    parquet = sorted(p for p in root.rglob("*.parquet") if ".git" not in p.parts)
    parquet = parquet or sorted(p for p in root.rglob("*.jsonl") if ".git" not in p.parts)  # a JSON Lines manifest
    if not parquet:
        raise FileNotFoundError(f"no parquet files under {root} (expected data/*.parquet, or *.jsonl)")
    for path in parquet:
        if path.stat().st_size < 1024 and path.read_bytes().startswith(b"version https://git-lfs"):
            raise FileNotFoundError(f"{path} is a Git LFS pointer, not the parquet file: run `git lfs pull` in {root}")
    return DatasetFiles(root, parquet, _archive_in(root, archive_name), provenance)


def from_hub(
    repo_id: str,
    revision: str | None,
    cache_dir: Path | None = None,
    split: str | None = None,
    datasets_cache: Path | None = None,
) -> DatasetFiles:
    """Pin the hub repository to its resolved commit and read its table with ``datasets.load_dataset``.

    ``cache_dir``: the huggingface_hub cache (default: its own); ``datasets_cache``: the ``datasets``
    cache (default: its own). With ``HF_HUB_OFFLINE=1`` the snapshot comes from the hub cache.
    """
    from huggingface_hub import snapshot_download

    try:
        path = Path(
            snapshot_download(
                repo_id=repo_id,
                repo_type="dataset",
                revision=revision,
                cache_dir=str(cache_dir) if cache_dir else None,
                allow_patterns=HUB_PATTERNS,
            )
        )
    except Exception as err:  # the hub raises many types; the user needs the ids either way
        raise RuntimeError(
            f"could not fetch dataset {repo_id}@{revision or 'main'} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Offline? Clone it elsewhere and use dataset.source=local dataset.local_dir=<folder>"
        ) from err
    provenance = {"kind": "hub", "repo_id": repo_id, "revision": revision, "commit": path.name}
    return from_datasets_folder(path, provenance, split, datasets_cache)


def from_datasets_folder(
    root: Path, provenance: dict, split: str | None = None, datasets_cache: Path | None = None
) -> DatasetFiles:
    """A folder laid out like a hub dataset repository, read through ``datasets.load_dataset``."""
    from stepeval.data import hf

    root = Path(root)
    table, files, chosen = hf.load_table(root, split, datasets_cache)
    provenance = {**provenance, "loader": f"datasets {hf.datasets_version()}", "split": chosen}
    return DatasetFiles(root, files, _archive_in(root, "audios.tar.gz"), provenance, table=table)


def from_local(path: Path) -> DatasetFiles:
    path = Path(path).expanduser().resolve()
    return from_folder(path, {"kind": "local", "path": str(path), "commit": _git_commit(path)})


def bundled_sample() -> DatasetFiles:
    from stepeval import __version__

    return from_folder(SAMPLE_DIR, {"kind": "sample", "package_version": __version__})


def packaged(name: str, split: str | None = None, datasets_cache: Path | None = None) -> DatasetFiles:
    """A small data set shipped inside the package (``sample``, ``spoken_qa_mini``)."""
    from stepeval import __version__

    if name == "sample":
        return bundled_sample()
    if name not in PACKAGED:
        raise ValueError(f"no packaged data set {name!r}; packaged: {sorted(PACKAGED)}")
    return from_datasets_folder(
        PACKAGED[name], {"kind": "packaged", "name": name, "package_version": __version__}, split, datasets_cache
    )


def resolve(
    source: str,
    location: str | None = None,
    revision: str | None = None,
    split: str | None = None,
    cache_dir: Path | None = None,
) -> DatasetFiles:
    """``source`` is hub, local, packaged or sample.

    ``location``: the hub repo id, the local folder, or the packaged set's name; ``cache_dir``: stepeval's
    cache (``dataset.cache_dir``), whose ``datasets/`` subfolder then holds the ``datasets`` cache.
    """
    datasets_cache = Path(cache_dir) / "datasets" if cache_dir else None
    if source == "sample":
        files = bundled_sample()
    elif source == "packaged":
        if not location:
            raise ValueError(f"dataset.source=packaged needs dataset.repo_id=<name>; packaged: {sorted(PACKAGED)}")
        files = packaged(location, split, datasets_cache)
    elif source == "local":
        if not location:
            raise ValueError("dataset.source=local needs dataset.local_dir=<folder with data/*.parquet and audios.tar.gz>")
        files = from_local(Path(location))
    elif source == "hub":
        if not location:
            raise ValueError("dataset.source=hub needs dataset.repo_id")
        files = from_hub(location, revision, split=split, datasets_cache=datasets_cache)
    else:
        raise ValueError(f"dataset.source={source!r}: use hub, local, packaged or sample")
    if cache_dir:
        files.cache_dir = Path(cache_dir)
    return files
