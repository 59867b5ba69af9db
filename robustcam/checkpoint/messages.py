"""One-line error text shared by the checkpoint modules.

Every failure of the checkpoint package is one line that names the file; these
helpers squeeze torch's multi-sentence explanations and long key lists into it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["MAX_NAMES", "more", "one_line", "shape_problems"]

MAX_NAMES = 3  # names listed per kind of mismatch; the count says how many there are


def one_line(text: str, limit: int = 200) -> str:
    """``text`` without colour codes and line breaks, cut to ``limit`` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # torch colours parts of its messages
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shape_problems(
    found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], *, source: str, target: str
) -> str:
    """One-line summary: size mismatches first (most telling), then missing and unexpected keys."""
    mismatched = [name for name in expected if name in found and found[name] != expected[name]]
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    parts: list[str] = []
    if mismatched:
        shown = "; ".join(
            f"{name}: {source} {_shape(found[name])} vs {target} {_shape(expected[name])}"
            for name in mismatched[:MAX_NAMES]
        )
        parts.append(f"{_count(len(mismatched), 'size mismatch', 'size mismatches')} ({shown}{more(mismatched)})")
    for names, label in ((missing, "missing key"), (unexpected, "unexpected key")):
        if names:
            shown = ", ".join(names[:MAX_NAMES])
            parts.append(f"{_count(len(names), label, label + 's')} ({shown}{more(names)})")
    return "; ".join(parts)


def more(names: Sequence[object]) -> str:
    """``", ... N more"`` for the names beyond the first ``MAX_NAMES``, else ``""``."""
    return f", ... {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def _count(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"
