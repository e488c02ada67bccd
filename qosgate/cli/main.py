"""The `qosgate` command line: serve, certs, render, explain, simulate."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qosgate.cli.manifests import dump_documents, load_documents
from qosgate.core.catalog import DEFAULT_CATALOG, Catalog
from qosgate.core.errors import InvalidError, QosgateError
from qosgate.core.explain import explain_object, format_report
from qosgate.core.render import render_object
from qosgate.core.workloads import describe
from qosgate.kube.catalog import load_catalog_file


def _catalog(path: str | None) -> Catalog:
    return load_catalog_file(path) if path else DEFAULT_CATALOG


def _each_document(path: str, action: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """Apply `action` to every document, collecting errors that name file, document, object and field."""
    source = "<stdin>" if path == "-" else path
    results, problems = [], []
    for number, doc in load_documents(path):
        try:
            results.append(action(doc))
        except InvalidError as exc:
            problems += [f"{source}: document {number} ({describe(doc)}): {e}" for e in exc.errors]
    if problems:
        raise QosgateError("\n".join(problems))
    return results


def run_render(args: argparse.Namespace) -> int:
    rendered = _each_document(args.file, render_object)
    sys.stdout.write(dump_documents(rendered))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    catalog = _catalog(args.catalog)
    reports = [r for group in _each_document(args.file, lambda doc: explain_object(doc, catalog)) for r in group]
    if args.output == "json":
        print(json.dumps(reports, indent=2))
    elif args.output == "yaml":
        sys.stdout.write(dump_documents(reports))
    else:
        print("\n\n".join(format_report(r) for r in reports) if reports else "no pods or pod templates found")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from qosgate.certs.cli import add_certs_parser
    from qosgate.cli.agent import add_agent_parser
    from qosgate.cli.serve import add_serve_parser
    from qosgate.cli.simulate import add_simulate_parser
    from qosgate.cli.status import add_status_parser

    parser = argparse.ArgumentParser(prog="qosgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(commands)
    add_certs_parser(commands)

    render = commands.add_parser("render", help="rewrite native KEP-3008 qosResources into carrier annotations")
    render.add_argument("file", metavar="FILE|-", help="manifest file, or - for standard input")
    render.set_defaults(func=run_render)

    explain = commands.add_parser("explain", help="show resolved classes, memory.min/high and annotations")
    explain.add_argument("file", metavar="FILE|-")
    explain.add_argument("--catalog", metavar="FILE", help="class catalog YAML (default: the built-in one)")
    explain.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    explain.set_defaults(func=run_explain)

    add_simulate_parser(commands)
    add_status_parser(commands)
    add_agent_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QosgateError as exc:
        print(f"qosgate {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("QOSGATE_DEBUG"):
            raise
        print(f"qosgate {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set QOSGATE_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
