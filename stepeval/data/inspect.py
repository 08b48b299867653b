"""``stepeval data inspect``: confirm a dataset's mapping in one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepeval import audio as audio_io
from stepeval.data import loader, sources
from stepeval.data.columns import ColumnSpec, SchemaError


def resolve_source(source: str, revision: str | None) -> sources.DatasetFiles:
    if source == "sample":
        return sources.bundled_sample()
    if Path(source).expanduser().exists():
        return sources.from_local(Path(source))
    return sources.from_hub(source, revision)


def inspect_command(source: str, revision: str | None, cache_dir: str | None, columns: list[str]) -> int:
    try:
        mapping = dict(item.split("=", 1) for item in columns)
    except ValueError:
        print(f"--column takes KEY=COLUMN, got {columns}", file=sys.stderr)
        return 2
    try:
        files = resolve_source(source, revision)
        print(f"source: {files.provenance}")
        print(f"parquet: {', '.join(str(p.relative_to(files.root)) for p in files.parquet)}")
        print(f"archive: {files.archive.name if files.archive else 'none'}")
        table = loader.read_table(files)
        print(f"schema ({len(table)} rows):")
        for name, dtype in table.dtypes.items():
            print(f"  {name}: {dtype}")
        ds = loader.load(files, ColumnSpec.from_mapping(mapping), Path(cache_dir) if cache_dir else None, strict=False)
    except (SchemaError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"layout: {ds.mapping.layout}  columns: {ds.mapping.columns}")
    turns = sum(len(c.turns) for c in ds.conversations)
    print(f"rows: {ds.rows}  conversations: {len(ds.conversations)}  user turns: {turns}")
    print("per category:")
    for name, count in sorted(ds.counts("category").items()):
        print(f"  {name}: {count}")
    print("per language:")
    for name, count in sorted(ds.counts("language").items()):
        print(f"  {name}: {count}")
    seconds, unreadable = 0.0, []
    for conv in ds.conversations:
        for turn in conv.turns:
            try:
                info = audio_io.sf.info(str(turn.audio_path))
                seconds += info.frames / info.samplerate
            except Exception as err:  # report every unreadable file, keep counting
                unreadable.append(f"{conv.id} turn {turn.index}: {turn.audio_path} ({err})")
    print(f"total audio: {seconds:.1f} s ({seconds / 3600:.2f} h)")
    print(f"unresolved audio references: {len(ds.unresolved)}")
    for conv_id, turn, ref in ds.unresolved:
        print(f"  {conv_id} turn {turn}: {ref}")
    if unreadable:
        print(f"unreadable audio files: {len(unreadable)}")
        for line in unreadable:
            print(f"  {line}")
    return 1 if ds.unresolved or unreadable else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stepeval data")
    sub = parser.add_subparsers(dest="action", required=True)
    ins = sub.add_parser("inspect", help="print schema, counts, durations and unresolved audio references")
    ins.add_argument("source", help="a hub dataset id (stepfun-ai/StepEval-Audio-360), a local folder, or 'sample'")
    ins.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    ins.add_argument("--cache-dir", default=None, help="where audios.tar.gz is extracted")
    ins.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY=COLUMN",
        help="column mapping, as dataset.columns.KEY in run configs (repeatable), e.g. layout=turn",
    )
    args = parser.parse_args(argv)
    return inspect_command(args.source, args.revision, args.cache_dir, args.column)
