"""Plain-text formatting shared by every command: ε values and terminal tables."""

from __future__ import annotations

from collections.abc import Sequence


def format_eps(eps: float) -> str:
    """'0.2' when a short decimal is exact, else '8/255' for multiples of 1/255 (how papers
    write ε), else 4 significant digits."""
    short = f"{eps:.4g}"
    if float(short) == eps:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return short


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell, two spaces apart, a dashed rule under the header;
    the columns whose indices are in `right` are right-aligned (numbers)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
