"""Render a `TableResult` as Markdown and LaTeX (the paper's layout, for people) and tidy CSV (for machines).

Markdown/LaTeX put ours, the paper's value and the difference in one cell
("0.9120 (paper 0.9511, −0.0391)") so a reader compares at a glance; the CSV keeps them as
separate columns, one row per cell, so scripts and the golden check never parse text.
Provenance and notes travel with every format (a JSON sidecar beside the CSV).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bench.atomic import write_json, write_text
from bench.errors import ConfigError
from bench.reports.tables import TableResult

FORMATS = ("md", "csv", "tex")
MISSING = "—"


def parse_formats(spec: str) -> list[str]:
    """``"md,csv,tex"`` -> ["md", "csv", "tex"]; an unknown format is a ConfigError."""
    out = []
    for part in str(spec).split(","):
        part = part.strip().lower()
        if part not in FORMATS:
            raise ConfigError(f"--format {spec!r}: {part!r} is not one of {', '.join(FORMATS)}")
        if part not in out:
            out.append(part)
    return out


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# metrics whose cells are counts: patches of Algorithm 1, parameters, reference lesions (all and per size bin),
# the verdict table's patients and false positives per patient (count_*)
COUNT_METRICS = ("patches", "parameters", "n_ref_lesions", "ref_", "count_")


def format_cell(rec: dict[str, Any] | pd.Series, digits: int = 4, tex: bool = False) -> str:
    """One cell as text: ours [± sd] [CI] (paper p, ±diff); '—' when missing; 'NaN (k excluded)'.

    ``tex=True`` returns escaped LaTeX with the paper part in ``\\scriptsize`` so wide tables stay legible.
    """
    esc = tex_escape if tex else (lambda x: x)
    paper = rec["paper"]
    fg = _flag(rec.get("paper_fg_iou", False))  # the paper's mIoU is a foreground IoU: compare ours' fg IoU

    def paper_part(body: str) -> str:
        return f" {{\\scriptsize ({esc(body)})}}" if tex else f" ({body})"

    printed = f"paper {paper:.{digits}f}" + (" = fg IoU" if fg else "")
    tail = paper_part(printed) if _finite(paper) else ""
    if rec["status"] == "missing":
        return esc(MISSING) + tail
    if rec["status"] == "nan" or not _finite(rec["ours"]):
        k = int(rec["n_excluded"]) if _finite(rec["n_excluded"]) else "?"
        if k == 0:  # undefined without any case left out (e.g. a lesion size bin with no lesion)
            return esc("NaN") + tail
        return esc(f"NaN ({k} excluded)") + tail
    if str(rec["metric"]).startswith(COUNT_METRICS):  # counts (a mean over seeds may be fractional)
        value = float(rec["ours"])
        return esc(f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}")
    signed = rec["metric"] == "dice_diff"
    text = f"{rec['ours']:+.{digits}f}" if signed else f"{rec['ours']:.{digits}f}"
    if _finite(rec["sd"]) and (signed or int(rec["n_seeds"] or 0) > 1):
        text += f" ± {rec['sd']:.{digits}f}"
    if _finite(rec["ci_low"]) and _finite(rec["ci_high"]):
        text += f" [{rec['ci_low']:+.{digits}f}, {rec['ci_high']:+.{digits}f}]"
    if signed and _finite(rec["n_cases"]):
        text += f" (n={int(rec['n_cases'])})"
    text = esc(text)
    if _finite(paper) and fg:
        ours_fg = rec.get("ours_fg_iou")
        if _finite(ours_fg):
            text += paper_part(f"fg IoU {float(ours_fg):.{digits}f}; {printed}, {rec['diff']:+.{digits}f}")
        else:
            text += paper_part(f"{printed}; our fg IoU not recorded")
    elif _finite(paper):
        text += paper_part(f"paper {paper:.{digits}f}, {rec['diff']:+.{digits}f}")
    return text


def _flag(value: Any) -> bool:
    """A boolean cell as written in memory or read back from CSV ("True"/"False")."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def _columns(f: pd.DataFrame) -> list[tuple[str, str]]:
    """(col_group, col) pairs: groups in first-appearance order, each group's columns in theirs."""
    cols: list[tuple[str, str]] = list(dict.fromkeys(zip(f["col_group"], f["col"])))
    order = {g: i for i, g in enumerate(dict.fromkeys(g for g, _ in cols))}
    return sorted(cols, key=lambda c: order[c[0]])  # stable: within a group, first appearance


def _grid(result: TableResult, tex: bool = False) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """Column labels and (group, row, cells) in first-appearance order: the paper's layout."""
    f = result.frame
    cols = _columns(f)
    # one spanning group (Table 3's "Patch Level") adds nothing per column; several (models) must stay
    single = len({g for g, _ in cols}) <= 1
    labels = [c if single else f"{g} {c}".strip() for g, c in cols]
    rows = []
    for (group, row), part in f.groupby(["group", "row"], sort=False):
        by_col = {(r["col_group"], r["col"]): format_cell(r, tex=tex) for _, r in part.iterrows()}
        rows.append((group, row, [by_col.get(c, "") for c in cols]))
    return labels, rows


def _provenance_lines(result: TableResult) -> list[str]:
    lines = []
    for key, value in result.provenance.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        lines.append(f"{key.replace('_', ' ')}: {value}")
    return lines


def to_markdown(result: TableResult) -> str:
    """The table in the paper's layout, then its provenance and notes."""
    labels, rows = _grid(result)
    out = [f"## {result.title}", ""]
    if not rows:
        out += ["(no cells)", ""]
    else:
        out.append("| " + " | ".join([result.row_header] + labels) + " |")
        out.append("|" + "---|" + "---:|" * len(labels))
        last_group = None
        for group, row, cells in rows:
            if group and group != last_group:
                out.append(f"| **{group}** |" + " |" * len(labels))
                last_group = group
            out.append("| " + " | ".join([row] + cells) + " |")
        out.append("")
    out += ["**Provenance**", ""] + [f"- {line}" for line in _provenance_lines(result)] + [""]
    if result.notes:
        out += ["**Notes**", ""] + [f"- {n}" for n in result.notes] + [""]
    return "\n".join(out)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_TEX_UNICODE = {"±": r"$\pm$", "−": r"$-$", "—": "--", "–": "--", "→": r"$\rightarrow$"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))
    for uni, tex in _TEX_UNICODE.items():
        out = out.replace(uni, tex)
    return out


def to_latex(result: TableResult) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); provenance and notes as comments and a footnote."""
    f = result.frame
    labels, rows = _grid(result, tex=True)
    cols = _columns(f)
    n = len(cols) + 1
    lines = [f"% {tex_escape(line)}" for line in _provenance_lines(result)]
    lines += [f"% note: {tex_escape(note)}" for note in result.notes]
    lines += [r"\begin{table}[ht]", r"\centering", r"\footnotesize", f"\\caption{{{tex_escape(result.title)}}}",
              f"\\begin{{tabular}}{{l{'r' * len(cols)}}}", r"\toprule"]
    groups = [g for g, _ in cols]
    if any(groups):
        spans, rules, start = [], [], 2
        for g in dict.fromkeys(groups):
            k = groups.count(g)
            spans.append(f"\\multicolumn{{{k}}}{{c}}{{{tex_escape(g)}}}")
            rules.append(f"\\cmidrule(lr){{{start}-{start + k - 1}}}")
            start += k
        lines.append(" & " + " & ".join(spans) + r" \\")
        lines.append(" ".join(rules))
        lines.append(" & ".join([tex_escape(result.row_header)] + [tex_escape(c) for _, c in cols]) + r" \\")
    else:
        lines.append(" & ".join([tex_escape(result.row_header)] + [tex_escape(x) for x in labels]) + r" \\")
    lines.append(r"\midrule")
    last_group = None
    for group, row, cells in rows:
        if group and group != last_group:
            lines.append(f"\\multicolumn{{{n}}}{{l}}{{\\textit{{{tex_escape(group)}}}}} \\\\")
            last_group = group
        lines.append(" & ".join([tex_escape(row)] + cells) + r" \\")
    wanted = ("dataset:", "profile:", "aggregation:", "seeds:", "split sizes:")
    short = tex_escape("; ".join(line for line in _provenance_lines(result) if line.startswith(wanted)))
    if f["paper"].notna().any():
        short += r"; small print: (paper value, ours $-$ paper)"
    if "paper_fg_iou" in f and f["paper_fg_iou"].map(_flag).any():
        short += tex_escape("; 'paper X = fg IoU': the paper's mIoU is its foreground IoU, compared with ours (fg IoU)")
    lines += [r"\bottomrule", r"\end{tabular}", "", f"\\par\\smallskip {short}", r"\end{table}", ""]
    return "\n".join(lines)


def to_csv(result: TableResult) -> str:
    """Tidy cells: one row per cell, ours/sd/paper/diff/CI/counts/status as separate columns."""
    return result.frame.to_csv(index=False)


def write_table(result: TableResult, out_dir: str | os.PathLike, formats: list[str]) -> list[Path]:
    """Write ``<name>.md/.csv/.tex`` (+ ``<name>.provenance.json`` beside the CSV) atomically."""
    out = Path(out_dir)
    written = []
    for fmt in formats:
        path = out / f"{result.name}.{fmt}"
        text = {"md": to_markdown, "csv": to_csv, "tex": to_latex}[fmt](result)
        write_text(path, text)
        written.append(path)
        if fmt == "csv":
            side = out / f"{result.name}.provenance.json"
            write_json(side, {"title": result.title, "provenance": result.provenance, "notes": result.notes})
            written.append(side)
    return written
