"""``stepeval``: run, data inspect (and the subcommands later issues add)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = """usage: stepeval <command> [args]

commands:
  run [overrides]           replay a dataset through a model, transcribe, score, tabulate (Hydra config;
                            `stepeval run --help` lists the config groups and their options)
  data inspect <source>     schema, counts and unresolved audio of a dataset (hub id, folder, or 'sample')
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return _run(rest)
    if command == "data":
        return _data(rest)
    print(f"stepeval: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def _run(rest: list[str]) -> int:
    from stepeval.hydra_app import run_app

    return run_app(rest)


def _data(rest: list[str]) -> int:
    from stepeval.data.inspect import inspect_command

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
    args = parser.parse_args(rest)
    return inspect_command(args.source, args.revision, args.cache_dir, args.column)


if __name__ == "__main__":
    sys.exit(main())
