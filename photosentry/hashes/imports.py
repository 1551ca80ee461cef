"""Reading and writing hash lists: industry plain lists, ThreatExchange PDQ lists, and
our own CSV / JSON Lines (which round-trip with ``photosentry ban export``).

Import files come from outside and may be hostile: lines are read with a length cap
(a 10 GB line never reaches memory), bytes must be UTF-8 without NUL, and every
value is validated (algorithm, length, hex, degenerate hashes). A bad line becomes an
:class:`ImportProblem` with its line number, never an exception from deep inside.
Reading is streaming: a 10-million-line file is never held whole.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import BinaryIO, TextIO

from ..errors import InvalidHash
from .banks import BankEntry, EntrySource, NewEntry
from .codecs import Algorithm, normalize

#: Longest line read from an import file, in bytes. Our longest legitimate line is an
#: export row of an image ban's keypoints (an ``orb`` value is 18,432 hex digits) with
#: its label and reason; every other kind is well under 2 KB.
MAX_LINE_BYTES = 32_768
#: Most problems kept in detail (the count is always exact).
MAX_PROBLEMS_KEPT = 100
#: Fields of our CSV export, in order (``ban import`` needs only algorithm and value).
CSV_FIELDS = ("id", "algorithm", "value", "bank", "label", "reason", "added_by", "added_at", "source", "group",
              "active", "removed_by", "removed_at", "removed_reason")


class ImportFormat(str, Enum):
    AUTO = "auto"
    #: One hash per line: ``VALUE`` (with --algorithm), ``ALGO VALUE`` or ``ALGO:VALUE``.
    PLAIN = "plain"
    #: Our CSV export (a header row naming at least ``algorithm`` and ``value``).
    CSV = "csv"
    #: Our JSON Lines export (objects with at least ``algorithm`` and ``value``).
    JSONL = "jsonl"
    #: ThreatExchange-style PDQ lists: ``PDQHEX[,QUALITY[,...]]`` per line.
    TE_PDQ = "te-pdq"


@dataclass(frozen=True)
class ImportProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    """What reading a file found: lines read, valid entries, problems (first 100 kept)."""

    lines: int = 0
    valid: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, line: int, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(ImportProblem(line, message))


class _Bad(Exception):
    pass


def read_lines(stream: BinaryIO) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None, why not) for each line, at most MAX_LINE_BYTES each."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the long line
                raw = stream.readline(1 << 16)
            yield number, None, f"line longer than {MAX_LINE_BYTES} bytes"
            continue
        if b"\x00" in raw:
            yield number, None, "contains NUL bytes (binary data?)"
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text.rstrip("\r\n"), ""


_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*[:\s,]\s*(\S+)\s*$")


def sniff(first: str, filename: str = "") -> ImportFormat:
    """Guess the format from the file name and its first non-blank line."""
    lower = filename.lower()
    if lower.endswith(".csv") and "algorithm" in first.lower():
        return ImportFormat.CSV
    if lower.endswith((".jsonl", ".ndjson")) or first.lstrip().startswith("{"):
        return ImportFormat.JSONL
    if "algorithm" in first.lower() and "value" in first.lower() and "," in first:
        return ImportFormat.CSV
    head = re.split(r"[,\t]", first.strip(), maxsplit=1)
    if len(head) == 2 and len(head[0].strip()) == 64 and head[1].strip().split(",")[0].strip().isdigit():
        return ImportFormat.TE_PDQ
    return ImportFormat.PLAIN


def iter_import(
    stream: BinaryIO,
    report: ImportReport,
    *,
    fmt: ImportFormat,
    bank: str | None,
    default_bank: str,
    algorithm: Algorithm | None = None,
    label: str = "",
    filename: str = "",
    progress: object = None,
) -> Iterator[NewEntry]:
    """Parse and validate an import file line by line, yielding valid entries and
    recording problems in ``report``. Duplicates are left to the store, which merges
    them (one active entry per bank, algorithm and value), so nothing grows with the file.

    Args:
        bank: put every entry in this bank (overrides a CSV/JSON ``bank`` field).
        default_bank: bank of entries whose line names none (when ``bank`` is None).
        algorithm: the algorithm of bare hash values in plain lists.
        progress: anything with ``update(n_bytes)`` (a tqdm bar), or None.
    """
    header: list[str] | None = None
    for number, text, why in read_lines(stream):
        report.lines = number
        if progress is not None:
            progress.update(len(text or "") + 1)  # type: ignore[attr-defined]
        if text is None:
            report.problem(number, why)
            continue
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if fmt is ImportFormat.AUTO:
            fmt = sniff(text, filename)
        try:
            if fmt is ImportFormat.CSV and header is None:
                header = [h.strip().lower() for h in next(csv.reader([text]))]
                if "algorithm" not in header or "value" not in header:
                    raise _Bad("CSV header must name the columns algorithm and value")
                continue
            entry = _parse(fmt, text, header, bank, default_bank, algorithm, label)
        except (_Bad, InvalidHash, ValueError) as exc:
            report.problem(number, str(exc))
            continue
        report.valid += 1
        yield entry


def _parse(
    fmt: ImportFormat,
    text: str,
    header: list[str] | None,
    bank: str | None,
    default_bank: str,
    algorithm: Algorithm | None,
    label: str,
) -> NewEntry:
    if fmt is ImportFormat.PLAIN:
        match = _TAG.match(text)
        if match:
            algo, value = Algorithm.parse(match.group(1)), match.group(2)
        else:
            value = text.strip()
            if algorithm is None:
                algo = _guess(value)
            else:
                algo = algorithm
        return NewEntry(algo, normalize(algo, value), bank or default_bank, label, EntrySource.IMPORT)
    if fmt is ImportFormat.TE_PDQ:
        fields = [f.strip() for f in re.split(r"[,\t]", text)]
        if len(fields) > 1 and fields[1]:
            if not fields[1].isdigit() or not 0 <= int(fields[1]) <= 100:
                raise _Bad(f"PDQ quality must be an integer 0-100, got {fields[1][:20]!r}")
        return NewEntry(Algorithm.PDQ, normalize(Algorithm.PDQ, fields[0]), bank or default_bank, label,
                        EntrySource.IMPORT)
    if fmt is ImportFormat.CSV:
        assert header is not None
        row = next(csv.reader([text]))
        if len(row) != len(header):
            raise _Bad(f"expected {len(header)} CSV fields, got {len(row)}")
        record = dict(zip(header, row, strict=True))
    else:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _Bad(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
        except RecursionError:  # deeply nested brackets: hostile, never a hash entry
            raise _Bad("not valid JSON: nested too deeply") from None
        if not isinstance(record, dict):
            raise _Bad("each JSON line must be an object")
    for key in ("algorithm", "value"):
        if not isinstance(record.get(key), str):
            raise _Bad(f"missing or non-text field {key!r}")
    if str(record.get("active", "1")).lower() in ("0", "false"):
        raise _Bad("entry is marked removed (active false); export without --all to re-import")
    algo = Algorithm.parse(record["algorithm"])
    row_label = record.get("label") or label
    row_bank = bank or record.get("bank") or default_bank
    if not isinstance(row_label, str) or not isinstance(row_bank, str):
        raise _Bad("label and bank must be text")
    return NewEntry(algo, normalize(algo, record["value"]), row_bank, row_label[:500], EntrySource.IMPORT,
                    str(record.get("group") or "")[:128])


def _guess(value: str) -> Algorithm:
    """The one algorithm whose hashes have this many hex digits (MD5's 32 are unique)."""
    digits = len(value.strip())
    fits = [a for a in Algorithm if a.spec.hex_digits == digits]
    if len(fits) == 1:
        return fits[0]
    raise _Bad(
        f"a bare {digits}-digit value is ambiguous: write 'ALGO VALUE' or pass --algorithm"
        + (f" ({' or '.join(a.value for a in fits)})" if fits else "")
    )


# -- export -----------------------------------------------------------------------------


def write_csv(entries: Iterable[BankEntry], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    count = 0
    for entry in entries:
        d = entry.to_dict()
        writer.writerow(["" if d[f] is None else int(d[f]) if isinstance(d[f], bool) else d[f] for f in CSV_FIELDS])
        count += 1
    return count


def write_jsonl(entries: Iterable[BankEntry], out: TextIO) -> int:
    count = 0
    for entry in entries:
        out.write(json.dumps(entry.to_dict(), separators=(",", ":")) + "\n")
        count += 1
    return count


def open_binary(data: bytes) -> BinaryIO:
    return io.BytesIO(data)
