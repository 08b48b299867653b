"""``stepeval data inspect``: confirm a dataset's mapping, and that every user turn's audio is usable, in one command.

Takes the same ``dataset.columns.KEY=VALUE`` overrides as ``stepeval run`` (``--column KEY=VALUE`` too),
prints the evidence for each key and the settled mapping as one line, and exits non-zero when the
dataset is empty, finds no conversations, or has audio that is unresolved, unreadable or damaged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepeval import audio as audio_io
from stepeval.data import loader, sources
from stepeval.data.archive import ArchiveError, UnsafeArchiveError
from stepeval.data.columns import ColumnSpec, SchemaError, parse_overrides
from stepeval.data.detect import evidence_line

CACHE_HELP = (
    "stepeval's cache folder (default $STEPEVAL_CACHE or ~/.cache/stepeval), as dataset.cache_dir: "
    "audios.tar.gz is extracted into <cache-dir>/audio/<hash>/, embedded audio into <cache-dir>/embedded-audio/, "
    "hub tables into <cache-dir>/datasets/"
)


def resolve_source(
    source: str, revision: str | None, split: str | None = None, cache_dir: Path | None = None
) -> sources.DatasetFiles:
    if source in sources.PACKAGED:
        return sources.resolve("packaged", source, split=split, cache_dir=cache_dir)
    if Path(source).expanduser().exists():
        return sources.resolve("local", source, cache_dir=cache_dir)
    return sources.resolve("hub", source, revision, split=split, cache_dir=cache_dir)


def _mapping_from(tokens: list[str], columns: list[str]) -> dict:
    mapping = parse_overrides(tokens)
    for key in ("dataset.allow_outside_paths", "allow_outside_paths"):
        mapping.pop(key, None)
    for item in columns:
        if "=" not in item:
            raise SchemaError(f"--column takes KEY=COLUMN, got {item!r}")
        key, value = item.split("=", 1)
        mapping[key.strip()] = value
    return mapping


def check_audio(ds: loader.LoadedDataset) -> tuple[float, list[str]]:
    """Total seconds of user audio, and one line per turn whose audio cannot be sent as it is."""
    seconds, bad = 0.0, []
    for conv in ds.conversations:
        for turn in conv.turns:
            try:
                samples, rate = audio_io.read_checked(turn.audio_path)
                seconds += audio_io.duration(samples, rate)
            except (audio_io.UnusableAudio, OSError) as err:
                bad.append(f"{conv.id} turn {turn.index}: {err}")
    return seconds, bad


def inspect_command(
    source: str,
    revision: str | None,
    cache_dir: str | None,
    columns: list[str],
    overrides: list[str] | None = None,
    split: str | None = None,
    allow_outside_paths: bool = False,
) -> int:
    cache = Path(cache_dir).expanduser() if cache_dir else None
    try:
        given = parse_overrides(overrides or [])
        allow = allow_outside_paths or any(
            str(given.get(k)).lower() == "true" for k in ("dataset.allow_outside_paths", "allow_outside_paths")
        )
        spec = ColumnSpec.from_mapping(_mapping_from(overrides or [], columns))
        files = resolve_source(source, revision, split, cache)
        print(f"source: {files.provenance}")
        print(f"data files: {', '.join(str(p.relative_to(files.root)) for p in files.parquet)}")
        print(f"archive: {files.archive.name if files.archive else 'none'}")
        table = loader.read_table(files)
        print(f"schema ({len(table)} rows):")
        for name, dtype in table.dtypes.items():
            print(f"  {name}: {dtype}")
        ds = loader.load(files, spec, cache, strict=False, allow_outside_paths=allow)
    except (SchemaError, ArchiveError, UnsafeArchiveError, FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("mapping evidence:")
    for key, why in ds.mapping.evidence.items():
        value = ds.mapping.layout if key == "layout" else ds.mapping.columns.get(key)
        print(f"  {evidence_line(key, value, why)}")
    print(f"mapping (paste after `stepeval run` or `stepeval data inspect {source}`):\n  {ds.mapping.overrides()}")
    if ds.audio_dir:
        print(f"audio extracted to: {ds.audio_dir}")
    turns = sum(len(c.turns) for c in ds.conversations)
    print(f"rows: {ds.rows}  conversations: {len(ds.conversations)}  user turns: {turns}")
    print("per category:")
    for name, count in sorted(ds.counts("category").items()):
        print(f"  {name}: {count}")
    print("per language:")
    for name, count in sorted(ds.counts("language").items()):
        print(f"  {name}: {count}")
    seconds, bad = check_audio(ds)
    print(f"total audio: {seconds:.1f} s ({seconds / 3600:.2f} h)")
    print(f"unresolved audio references: {len(ds.unresolved)}")
    for conv_id, turn, ref in ds.unresolved:
        print(f"  {conv_id} turn {turn}: {ref}")
    print(f"unusable audio files: {len(bad)}")
    for line in bad:
        print(f"  {line}")
    failures = []
    if not ds.conversations:
        failures.append(f"no conversations found in {ds.rows} rows")
    if ds.unresolved:
        failures.append(f"{len(ds.unresolved)} unresolved audio reference(s)")
    if bad:
        failures.append(f"{len(bad)} unusable audio file(s)")
    if failures:
        print(f"error: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stepeval data")
    sub = parser.add_subparsers(dest="action", required=True)
    ins = sub.add_parser(
        "inspect",
        help="print schema, mapping evidence, counts, durations; check every user turn's audio",
        description="Mapping overrides take the same form as `stepeval run`: dataset.columns.KEY=VALUE (or --column KEY=VALUE).",
    )
    ins.add_argument(
        "source",
        help=f"a hub dataset id (stepfun-ai/StepEval-Audio-360), a local folder, or a packaged set {sorted(sources.PACKAGED)}",
    )
    ins.add_argument(
        "overrides",
        nargs="*",
        metavar="dataset.columns.KEY=VALUE",
        help="column mapping, exactly as for stepeval run (and dataset.allow_outside_paths=true)",
    )
    ins.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    ins.add_argument("--split", default=None, help="hub/packaged split (default: the only one)")
    ins.add_argument("--cache-dir", default=None, help=CACHE_HELP)
    ins.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let audio references open files outside the dataset's folder (symlinks, absolute paths, ..), "
        "as dataset.allow_outside_paths=true",
    )
    ins.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY=COLUMN",
        help="column mapping (repeatable), the same as dataset.columns.KEY=COLUMN",
    )
    args = parser.parse_args(argv)
    return inspect_command(
        args.source, args.revision, args.cache_dir, args.column, args.overrides, args.split, args.allow_outside_paths
    )
