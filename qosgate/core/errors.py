"""Errors that name the offending field, so every denial and CLI message points at what to fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class QosgateError(ValueError):
    """Base for every error the core raises on bad input (never on a bug)."""


# A message names at most this many problems: enough to fix a manifest in one round, bounded however many
# a hostile object produces (a denial's text is what kube-apiserver shows a user, and it must stay small).
MAX_REPORTED = 20
MAX_MESSAGE = 4096


def bounded_message(parts: Sequence[str], total: int | None = None, limit: int = MAX_REPORTED,
                    max_chars: int = MAX_MESSAGE) -> str:
    """`a; b; c; and N more problems` naming at most `limit` of `total` parts, cut to `max_chars`."""
    total = len(parts) if total is None else total
    text = "; ".join(parts[:limit])
    hidden = total - min(len(parts), limit)
    suffix = f"; and {hidden} more problem{'s' if hidden > 1 else ''}" if hidden > 0 else ""
    if len(text) + len(suffix) > max_chars:  # the count of what is not shown always survives the cut
        text = text[: max_chars - len(suffix) - 1] + "…"
    return text + suffix


class InvalidError(QosgateError):
    """One or more field errors, all reported at once so users fix everything in one round."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__(bounded_message([str(e) for e in self.errors[:MAX_REPORTED]], len(self.errors)))

    @classmethod
    def single(cls, path: str, message: str) -> InvalidError:
        return cls([FieldError(path, message)])


class ShapeError(InvalidError):
    """Fields of the wrong JSON type: the request is malformed (HTTP 400 semantics), not merely refused."""


def unknown_field_errors(raw: Mapping[object, object], allowed: set[str], path: str) -> list[FieldError]:
    """Strict decoding like kubectl --validate=strict: a typo'd key is an error naming it, never ignored."""
    return [FieldError(f"{path}.{key}" if path else str(key), f"unknown field (allowed: {', '.join(sorted(allowed))})")
            for key in raw if key not in allowed]
