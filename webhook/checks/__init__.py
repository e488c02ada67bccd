"""Validating-webhook checks, one module per concern (koordinator webhook style).

Every check is a pure function of decoded objects (no I/O, no clock) returning a `Finding`; the handler in
`webhook/validate.py` only picks the checks that apply to a request and folds their findings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check has to say: reasons to deny (all of them, so users fix everything at once) and warnings."""

    denials: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # The request itself is malformed (fields of the wrong type): answered as a 400, not a 403.
    bad_request: bool = False
    # Nothing the author did wrong, and likely to pass when retried (the mutating webhook did not run):
    # answered as a 503, which controllers and clients retry, instead of a 403 that reads as final.
    retryable: bool = False

    @property
    def denied(self) -> bool:
        return bool(self.denials)

    def __add__(self, other: Finding) -> Finding:
        return Finding(self.denials + other.denials, self.warnings + other.warnings,
                       self.bad_request or other.bad_request,
                       # Retryable only when every finding that denies is: one lasting reason makes it final.
                       bool(self.denials or other.denials)
                       and (self.retryable or not self.denials) and (other.retryable or not other.denials))


PASS = Finding()


def deny(*messages: str) -> Finding:
    return Finding(denials=tuple(messages))


def malformed(*messages: str) -> Finding:
    return Finding(denials=tuple(messages), bad_request=True)


def warn(*messages: str) -> Finding:
    return Finding(warnings=tuple(messages))
