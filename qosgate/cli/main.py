"""The `qosgate` command line: serve, agent, status, certs, render, explain, simulate."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qosgate.core.errors import QosgateError

if TYPE_CHECKING:
    from qosgate.core.catalog import Catalog

# Every command with the module and function that register its parser, in the order `--help` lists them. Only
# the module of the command being run is imported: `qosgate serve extender` must not pay for certificate
# generation (cryptography), the status report or the simulator in its resident memory.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("serve", "qosgate.cli.serve", "add_serve_parser"),
    ("certs", "qosgate.certs.cli", "add_certs_parser"),
    ("render", __name__, "add_render_parser"),
    ("explain", __name__, "add_explain_parser"),
    ("simulate", "qosgate.cli.simulate", "add_simulate_parser"),
    ("status", "qosgate.cli.status", "add_status_parser"),
    ("agent", "qosgate.cli.agent", "add_agent_parser"),
)


def _catalog(path: str | None) -> Catalog:
    from qosgate.core.catalog import DEFAULT_CATALOG
    from qosgate.kube.catalog import load_catalog_file

    return load_catalog_file(path) if path else DEFAULT_CATALOG


def _each_document(path: str, action: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """Apply `action` to every document, collecting errors that name file, document, object and field."""
    from qosgate.cli.manifests import load_documents
    from qosgate.core.errors import InvalidError
    from qosgate.core.workloads import describe

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
    from qosgate.cli.manifests import dump_documents
    from qosgate.core.render import render_object

    rendered = _each_document(args.file, render_object)
    sys.stdout.write(dump_documents(rendered))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from qosgate.cli.manifests import dump_documents
    from qosgate.core.explain import explain_object, format_report

    catalog = _catalog(args.catalog)
    reports = [r for group in _each_document(args.file, lambda doc: explain_object(doc, catalog)) for r in group]
    if args.output == "json":
        print(json.dumps(reports, indent=2))
    elif args.output == "yaml":
        sys.stdout.write(dump_documents(reports))
    else:
        print("\n\n".join(format_report(r) for r in reports) if reports else "no pods or pod templates found")
    return 0


def add_render_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    render = commands.add_parser("render", help="rewrite native KEP-3008 qosResources into carrier annotations")
    render.add_argument("file", metavar="FILE|-", help="manifest file, or - for standard input")
    render.set_defaults(func=run_render)
    return render


def add_explain_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    explain = commands.add_parser("explain", help="show resolved classes, memory.min/high and annotations")
    explain.add_argument("file", metavar="FILE|-")
    explain.add_argument("--catalog", metavar="FILE", help="class catalog YAML (default: the built-in one)")
    explain.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    explain.set_defaults(func=run_explain)
    return explain


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command tree; given the arguments, only the parser of the command they run is built in full.

    The other commands get placeholders (their names still parse and list), so their modules stay unimported.
    """
    selected = argv[0] if argv and argv[0] in {name for name, _, _ in COMMANDS} else None
    parser = argparse.ArgumentParser(prog="qosgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, function in COMMANDS:
        if selected is None or name == selected:
            getattr(importlib.import_module(module), function)(commands)
        else:
            commands.add_parser(name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
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
