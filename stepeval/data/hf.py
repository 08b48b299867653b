"""Read a dataset repository's table with Hugging Face ``datasets``, audio left undecoded.

``datasets`` decodes Audio columns with torchcodec/ffmpeg, which the harness neither needs nor
installs: every Audio feature is cast to ``decode=False`` and rows are read from Arrow, so an audio
value stays ``{"bytes": ..., "path": ...}`` (nested ones too) and soundfile decodes it later.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def datasets_version() -> str:
    import datasets

    return datasets.__version__


def load_table(root: Path, split: str | None = None, cache_dir: Path | None = None) -> tuple[pd.DataFrame, list[Path], str]:
    """(rows, the split's data files, the split's name) of the dataset repository at ``root``.

    The prepared Arrow copy goes to the ``datasets`` cache (``cache_dir``, default its own), so a
    second load reuses it. With several splits, ``split`` must name one.
    """
    import datasets
    from datasets import Audio

    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()
    try:
        builder = datasets.load_dataset_builder(str(root), cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as err:  # datasets raises many types for a folder it cannot read
        raise FileNotFoundError(f"datasets cannot read {root} as a dataset repository ({type(err).__name__}: {err})") from err
    splits = sorted(builder.config.data_files or {})
    if split is None:
        if len(splits) != 1:
            raise ValueError(f"{root} has splits {splits}: choose one with dataset.split=<name>")
        split = splits[0]
    elif split not in splits:
        raise ValueError(f"{root} has no split {split!r}; splits: {splits} (dataset.split)")
    files = [Path(str(f)) for f in builder.config.data_files[split]]
    try:
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
    except Exception as err:
        shown = ", ".join(str(f) for f in files[:3])
        raise ValueError(f"datasets cannot read split {split!r} of {root} ({shown}): {type(err).__name__}: {err}") from err
    for name, feature in ds.features.items():
        if isinstance(feature, Audio) and feature.decode:
            ds = ds.cast_column(name, Audio(sampling_rate=feature.sampling_rate, decode=False))
    table = ds.with_format("arrow")[:].to_pandas()  # Arrow rows: nothing is decoded, nested Audio included
    return table, files, split
