"""``qosgate certs …``: generate or refresh the certificates of an install.

One CA signs two leaves, all written into ``--out``:

- the serving certificate (``tls.crt``/``tls.key``) carrying the names of every ``--service``
  (default: ``qosgate-webhook`` and ``qosgate-extender`` in ``qosgate-system``, so the defaults are an
  install's whole need);
- kube-scheduler's client certificate for the extender's verbs (``client.crt``/``client.key``), which the
  extender checks against the same CA (``qosgate serve --extender-client-ca`` defaults to ``ca.crt``).

``manifests/overlays/self-signed`` reads exactly these files from its ``generated/`` folder (kustomize
secretGenerator + replacements), so ``qosgate certs generate --out manifests/overlays/self-signed/generated``
followed by ``kubectl apply -k manifests/overlays/self-signed`` is a complete install.

``qosgate/cli/main.py`` owns the top-level parser and calls :func:`add_certs_parser` then
:func:`run_certs`. stdout carries only the base64 caBundle so scripts can do
``CA=$(qosgate certs generate …)``; everything for humans goes to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from qosgate.certs.generate import (
    CLIENT_CERT_FILE,
    DEFAULT_CA_DAYS,
    DEFAULT_CLIENT_NAME,
    DEFAULT_RENEW_BEFORE_DAYS,
    DEFAULT_SERVING_DAYS,
    EnsureAction,
    atomic_write,
    ca_bundle_b64,
    certificate_not_after,
    ensure_certificates,
    ensure_client_certificate,
    generate_certificates,
    issue_client_certificate,
    service_dns_names,
    tls_secret_manifest,
    validate_dns_name,
)

if TYPE_CHECKING:
    # argparse's sub-command registry (a private class in typeshed's spelling). Only for the type checker:
    # on Python 3.11 the class is not subscriptable at run time.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_certs_parser", "main", "run_certs"]

_PROG = "qosgate certs"
# What an install needs: both Services of manifests/base, one certificate for both.
DEFAULT_SERVICES = ("qosgate-webhook", "qosgate-extender")
DEFAULT_NAMESPACE = "qosgate-system"


class _UsageError(Exception):
    """A bad argument discovered after parsing; carries the option it is about."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"argument {option}: {message}")


# argparse ``type=`` callables: argparse turns ArgumentTypeError into
# "argument --ip: invalid IP address …" and exit status 2, i.e. the option is always named.


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IP address: {value!r}") from None


def _dns(value: str) -> str:
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        pass
    else:
        raise argparse.ArgumentTypeError(f"{value!r} is an IP address; pass it with --ip")
    try:
        return validate_dns_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {days}")
    return days


def _non_negative_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {days}")
    return days


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="certificate directory")
    parser.add_argument(
        "--service",
        action="append",
        default=None,
        metavar="NAME",
        help="Service the serving certificate is for (SANs NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.DOMAIN); "
        f"repeatable (default: {' and '.join(DEFAULT_SERVICES)})",
    )
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        metavar="NS",
        help=f"the Services' namespace (default {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--dns", action="append", default=[], type=_dns, metavar="NAME", help="extra DNS SAN (repeatable)"
    )
    parser.add_argument("--ip", action="append", default=[], type=_ip, metavar="ADDR", help="extra IP SAN (repeatable)")
    parser.add_argument(
        "--days",
        type=_positive_days,
        default=DEFAULT_SERVING_DAYS,
        metavar="N",
        help=f"serving certificate validity in days (default {DEFAULT_SERVING_DAYS})",
    )
    parser.add_argument(
        "--ca-days",
        type=_positive_days,
        default=DEFAULT_CA_DAYS,
        metavar="N",
        help=f"CA validity in days (default {DEFAULT_CA_DAYS})",
    )
    parser.add_argument(
        "--key-type", choices=("ecdsa", "rsa"), default="ecdsa", help="ECDSA P-256 (default) or RSA 2048"
    )
    parser.add_argument("--cluster-domain", default="cluster.local", metavar="DOMAIN")
    parser.add_argument(
        "--secret-manifest",
        type=Path,
        metavar="FILE",
        help="also write a kubernetes.io/tls Secret manifest (YAML, contains the private key: mode 0600)",
    )
    parser.add_argument(
        "--secret-name", metavar="NAME", help="name of the Secret in --secret-manifest (default FIRST-SERVICE-tls)"
    )
    parser.add_argument(
        "--client-name",
        default=DEFAULT_CLIENT_NAME,
        metavar="CN",
        help=f"common name of kube-scheduler's client certificate ({CLIENT_CERT_FILE}; default {DEFAULT_CLIENT_NAME})",
    )


def add_certs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``certs generate`` and ``certs ensure`` under an existing sub-parser group.

    Sets ``func=run_certs`` as a default so a ``args.func(args)`` dispatcher works unchanged.
    """
    certs = subparsers.add_parser(
        "certs",
        help="create the CA, the serving certificate and kube-scheduler's client certificate",
        description="Create the CA, the serving certificate for the webhook and extender Services and "
        "kube-scheduler's client certificate for the extender; prints the base64 caBundle on stdout.",
    )
    actions = certs.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)
    generate = actions.add_parser(
        "generate",
        help="create a new CA, serving and client certificate (overwrites)",
        description="Create a new CA, serving certificate and client certificate in DIR, overwriting any "
        "existing ones (a new CA: every copy of the old one, e.g. kube-scheduler's, must be replaced).",
    )
    _common_arguments(generate)
    ensure = actions.add_parser(
        "ensure",
        help="create on first run, renew when expiring, otherwise keep",
        description=(
            "Keep a valid set; issue a new serving (or client) certificate from the existing CA when it "
            "expires within --renew-before days or lacks a requested name; recreate everything when the CA "
            "is unusable."
        ),
    )
    _common_arguments(ensure)
    ensure.add_argument(
        "--renew-before",
        type=_non_negative_days,
        default=DEFAULT_RENEW_BEFORE_DAYS,
        metavar="DAYS",
        help=f"renew when expiring within DAYS (default {DEFAULT_RENEW_BEFORE_DAYS})",
    )
    certs.set_defaults(func=run_certs)
    return certs


def _check_names(args: argparse.Namespace) -> None:
    # Checked here as well as by the generator so the message names the option, not a function.
    if args.service is None:
        args.service = list(DEFAULT_SERVICES)
    for service in args.service:
        try:
            service_dns_names(service, "default")
        except ValueError as exc:
            raise _UsageError("--service", str(exc)) from None
    try:
        service_dns_names("svc", args.namespace)
    except ValueError as exc:
        raise _UsageError("--namespace", str(exc)) from None
    try:
        validate_dns_name(args.cluster_domain)
    except ValueError as exc:
        raise _UsageError("--cluster-domain", str(exc)) from None
    if not args.client_name or len(args.client_name) > 64:
        raise _UsageError("--client-name", "must be 1-64 characters")


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise _UsageError("--out", f"{str(out)!r} exists and is not a directory")
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise _UsageError("--out", f"cannot create directory {str(out)!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise _UsageError("--out", f"directory {str(out)!r} is not writable")


def _run(args: argparse.Namespace) -> int:
    _check_names(args)
    out: Path = args.out
    _prepare_out(out)
    service, *other_services = args.service
    # The first Service names the certificate (and the CA); the others ride along as SANs.
    extra: list[str] = [
        name for other in other_services for name in service_dns_names(other, args.namespace, args.cluster_domain)
    ]
    extra += [*args.dns, *args.ip]
    try:
        if args.certs_command == "ensure":
            result = ensure_certificates(
                out,
                service,
                args.namespace,
                extra,
                renew_before_days=args.renew_before,
                ca_days=args.ca_days,
                days=args.days,
                key_type=args.key_type,
                cluster_domain=args.cluster_domain,
            )
            action = result.action
            if action is EnsureAction.REGENERATED:
                print(f"{_PROG}: CA replaced: update every caBundle and kube-scheduler's copy", file=sys.stderr)
            # Re-issued when missing, expiring or not signed by the (possibly new) CA.
            ensure_client_certificate(out, args.client_name, renew_before_days=args.renew_before, days=args.days,
                                      key_type=args.key_type)
        else:
            generate_certificates(
                out,
                service,
                args.namespace,
                extra,
                ca_days=args.ca_days,
                days=args.days,
                key_type=args.key_type,
                cluster_domain=args.cluster_domain,
            )
            issue_client_certificate(out, args.client_name, days=args.days, key_type=args.key_type)
            action = EnsureAction.CREATED
    except OSError as exc:
        raise _UsageError("--out", f"cannot write certificates to {str(out)!r}: {exc.strerror or exc}") from None

    if args.secret_manifest is not None:
        manifest = tls_secret_manifest(out, args.secret_name or f"{service}-tls", args.namespace)
        try:
            # 0600: the manifest embeds tls.key.
            atomic_write(args.secret_manifest, yaml.safe_dump(manifest, sort_keys=False).encode(), 0o600)
        except OSError as exc:
            raise _UsageError(
                "--secret-manifest", f"cannot write {str(args.secret_manifest)!r}: {exc.strerror or exc}"
            ) from None

    not_after = certificate_not_after(out / "tls.crt")
    client_not_after = certificate_not_after(out / CLIENT_CERT_FILE)
    print(
        f"{_PROG}: {action.value} certificates in {out} (serving certificate valid until {not_after:%Y-%m-%d}, "
        f"client certificate {args.client_name!r} until {client_not_after:%Y-%m-%d})",
        file=sys.stderr,
    )
    print(ca_bundle_b64(out))
    return 0


def run_certs(args: argparse.Namespace) -> int:
    """Execute a parsed ``certs`` command; returns the process exit status (0, 1 or 2)."""
    try:
        return _run(args)
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        # Anything else the generator rejects (e.g. an unreadable CA during ensure) — still no traceback.
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m qosgate.certs.cli certs generate …``), mainly for tests and debugging."""
    parser = argparse.ArgumentParser(prog="qosgate")
    add_certs_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_certs(args)


if __name__ == "__main__":
    raise SystemExit(main())
