"""Errors that name the offending field, so every denial and CLI message points at what to fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class QosgateError(ValueError):
    """Base for every error the core raises on bad input (never on a bug)."""


class InvalidError(QosgateError):
    """One or more field errors, all reported at once so users fix everything in one round."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    @classmethod
    def single(cls, path: str, message: str) -> InvalidError:
        return cls([FieldError(path, message)])


def unknown_field_errors(raw: Mapping[object, object], allowed: set[str], path: str) -> list[FieldError]:
    """Strict decoding like kubectl --validate=strict: a typo'd key is an error naming it, never ignored."""
    return [FieldError(f"{path}.{key}" if path else str(key), f"unknown field (allowed: {', '.join(sorted(allowed))})")
            for key in raw if key not in allowed]
