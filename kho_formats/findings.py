"""Findings of ``kho check``: severity, code, message, address or path.

Kept apart from :mod:`kho_formats.ops.check` so that client modules (which
report their own findings) and the checker can both import it.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str
    phys: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.phys is not None:
            where.append(f"{self.phys:#x}")
        loc = (" @ ".join(where) + ": ") if where else ""
        return f"{self.severity}: [{self.code}] {loc}{self.message}"

    def to_json(self) -> dict:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "phys": self.phys,
            "path": self.path,
        }


__all__ = ["ERROR", "WARNING", "INFO", "SEVERITIES", "Finding"]
