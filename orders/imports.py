"""Import products from a CSV file: validated first, then upserted on SKU in short batches.

The file (UTF-8, header ``sku,name,price,stock`` in any order, optionally ``description``) is read
twice. The first pass validates every line and writes nothing: a file that cannot be imported at
all (not UTF-8 anywhere in it, empty, a bad header) is an ``ImportFileError`` before any row is
written. The second pass writes the valid rows in batches, each its own short transaction
(``orders.bulk.batch_run``): one ``INSERT ... ON CONFLICT (sku) DO UPDATE ... WHERE`` the values
differ (``orders.bulk.upsert_sql``), fed by array parameters or, with ``copy=True``, by ``COPY``
into a temporary table that lives for that one transaction.

Failure behaviour:
- A bad line (a price that is not a plain amount, a stock that is not a whole number, an empty
  SKU or name, too many or too few fields, a SKU already seen earlier in the file) is rejected and
  reported with its line number; it never reaches the database. The other rows, of its batch too,
  are written: fix the reported lines and import the same file again.
- Idempotent: a row whose values are already stored is not written (no new row version, its
  ``version`` unchanged), so running the same file twice changes nothing the second time.
- A batch the database refuses, or a connection lost, stops the import with ``ImportStopped``:
  whole batches only are committed, never part of one, and running the same file again finishes
  the import.
- The cached catalog is invalidated once, after the last batch committed.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import psycopg
from django.db import DatabaseError, connections, transaction

from core.exceptions import InvalidAmount
from core.money import money_parse
from dbops.transactions import ServiceTransactionFailed
from orders.bulk import (
    IMPORT_FIELDS,
    OPTIONAL_FIELDS,
    batch_run,
    classify_sql,
    stop_reason,
    temp_table_source,
    temp_table_sql,
    unnest_source,
    upsert_sql,
)
from orders.exceptions import ImportFileError, ImportStopped, InvalidChange
from orders.models import Product
from orders.selectors import catalog_invalidate

BATCH_SIZE = 1000
COPY_BATCH_SIZE = 10_000
MAX_BATCH_SIZE = 100_000
# The largest file the admin's upload takes (about 100,000 products); larger ones: the command.
UPLOAD_MAX_BYTES = 10 * 2**20
STOCK_MAX = 2_147_483_647  # the column is a PostgreSQL integer
# ASCII digits only: Decimal() would also take "1e3", "1_000", " NaN" and Arabic-Indic digits.
PLAIN_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
WHOLE_NUMBER = re.compile(r"[0-9]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HEADER_HELP = "expected the header sku,name,price,stock (and optionally description)"


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Row:
    line: int
    values: tuple  # in the order of the import's fields: sku, name, price, stock[, description]


@dataclass
class ImportReport:
    fields: tuple[str, ...] = IMPORT_FIELDS
    rows: int = 0  # valid rows: written, or checked in a dry run
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    batches: int = 0
    rejects: list[Reject] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        return (
            f"{self.rows + len(self.rejects):,} rows read: {self.inserted:,} {would}inserted, "
            f"{self.updated:,} {would}updated, {self.unchanged:,} unchanged, "
            f"{len(self.rejects):,} rejected"
            + ("" if self.dry_run else f", in {self.batches:,} batch{'es' * (self.batches != 1)}")
            + f" ({self.seconds:.1f} s)."
        )


@dataclass(frozen=True)
class ImportProgress:
    done: int
    total: int
    started: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6)

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.done else None


def _lines(file: BinaryIO) -> Iterator[str]:
    """The file's lines as text; a byte that is not UTF-8 stops everything, naming its line."""
    for number, raw in enumerate(file, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line): "
                "save the file as UTF-8 and import it again; nothing was written",
                line=number,
            ) from None


def _header(reader) -> tuple[str, ...]:
    """The file's columns in the import's order (the fields it sets), checked."""
    try:
        names = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise ImportFileError(f"the file is empty: {HEADER_HELP}", line=1) from None
    except csv.Error as exc:
        raise ImportFileError(f"unreadable header ({exc}): {HEADER_HELP}", line=1) from None
    known = (*IMPORT_FIELDS, *OPTIONAL_FIELDS)
    unknown = [name for name in names if name not in known]
    missing = [name for name in IMPORT_FIELDS if name not in names]
    twice = sorted({name for name in names if names.count(name) > 1})
    problems = (
        ([f"unknown column {', '.join(map(repr, unknown))}"] if unknown else [])
        + ([f"missing column {', '.join(map(repr, missing))}"] if missing else [])
        + ([f"column {', '.join(map(repr, twice))} appears twice"] if twice else [])
    )
    if problems:
        raise ImportFileError(f"{'; '.join(problems)}: {HEADER_HELP}", line=1)
    return tuple(names)


def _text(value: str, name: str, limit: int, problems: list[str]) -> str:
    value = value.strip()
    if not value:
        problems.append(f"{name} is empty")
    elif len(value) > limit:
        problems.append(f"{name} is longer than {limit} characters")
    elif CONTROL.search(value):
        problems.append(f"{name} contains a control character")
    return value


def _price(value: str, problems: list[str]):
    text = value.strip()
    if not PLAIN_AMOUNT.fullmatch(text):
        problems.append(f"price {value!r} is not a plain amount such as 12.50")
        return None
    try:
        return money_parse(text)
    except InvalidAmount as exc:
        problems.append(f"price {value!r}: {exc.reason}")
        return None


def _stock(value: str, problems: list[str]) -> int | None:
    text = value.strip()
    if not WHOLE_NUMBER.fullmatch(text) or int(text) > STOCK_MAX:
        problems.append(f"stock {value!r} is not a whole number from 0 to {STOCK_MAX:,}")
        return None
    return int(text)


def _row(line: int, fields: list[str], header: tuple[str, ...], seen: dict) -> Row | Reject:
    if len(fields) != len(header):
        hint = " (a quote left open?)" if any("\n" in f for f in fields) else ""
        return Reject(
            line,
            f"{len(fields)} fields where the header has {len(header)}: a truncated or broken "
            f"line{hint}",
        )
    given = dict(zip(header, fields, strict=True))
    problems: list[str] = []
    sku = _text(given["sku"], "sku", Product._meta.get_field("sku").max_length, problems)
    name = _text(given["name"], "name", Product._meta.get_field("name").max_length, problems)
    values = [sku, name, _price(given["price"], problems), _stock(given["stock"], problems)]
    if "description" in given:
        if "\x00" in given["description"]:
            problems.append("description contains a NUL character")
        values.append(given["description"])
    if not problems and sku in seen:
        problems.append(
            f"SKU {sku!r} appears again (first on line {seen[sku]}); only the first is imported"
        )
    if problems:
        return Reject(line, "; ".join(problems))
    seen[sku] = line
    return Row(line, tuple(values))


def rows_read(file: BinaryIO) -> tuple[tuple[str, ...], Iterator[Row | Reject]]:
    """The fields the file sets, and each of its records, valid (``Row``) or not (``Reject``),
    with the line it starts on. ``ImportFileError`` when the file cannot be imported at all."""
    reader = csv.reader(_lines(file))
    header = _header(reader)
    fields = IMPORT_FIELDS + tuple(name for name in OPTIONAL_FIELDS if name in header)

    def records() -> Iterator[Row | Reject]:
        seen: dict[str, int] = {}
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Reject(start, f"unreadable CSV ({exc})")
                continue
            if record and not (len(record) == 1 and not record[0].strip()):  # blank lines
                yield _row(start, record, header, seen)

    return fields, records()


def _rewind(file: BinaryIO) -> None:
    try:
        file.seek(0)
    except (OSError, ValueError, AttributeError):
        raise ImportFileError(
            "the file cannot be read twice (a pipe?): save it to a file and import that"
        ) from None


def _scan(file: BinaryIO) -> tuple[tuple[str, ...], int, list[Reject]]:
    """First pass, nothing written: the fields, the count of valid rows, every reject."""
    _rewind(file)
    fields, records = rows_read(file)
    valid, rejects = 0, []
    for record in records:
        if isinstance(record, Reject):
            rejects.append(record)
        else:
            valid += 1
    return fields, valid, rejects


def _batches(file: BinaryIO, size: int) -> Iterator[list[Row]]:
    _rewind(file)
    _, records = rows_read(file)
    batch: list[Row] = []
    for record in records:
        if isinstance(record, Row):
            batch.append(record)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def _columns(batch: list[Row]) -> list[list]:
    return [list(column) for column in zip(*(row.values for row in batch), strict=True)]


def _upsert(batch: list[Row], fields: tuple[str, ...], using: str) -> list[bool]:
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            upsert_sql(connection, fields, unnest_source(connection, fields)), _columns(batch)
        )
        return [inserted for (inserted,) in cursor.fetchall()]


def _copy_upsert(batch: list[Row], fields: tuple[str, ...], using: str) -> list[bool]:
    connection = connections[using]
    create, copy = temp_table_sql(connection, fields)
    with connection.cursor() as cursor:
        cursor.execute(create)
        with cursor.copy(copy) as stream:
            for row in batch:
                stream.write_row(row.values)
        cursor.execute(upsert_sql(connection, fields, temp_table_source(connection)))
        return [inserted for (inserted,) in cursor.fetchall()]


def _classify(batch: list[Row], fields: tuple[str, ...], using: str) -> tuple[int, int]:
    connection = connections[using]
    with transaction.atomic(using=using, durable=True), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION READ ONLY")  # a dry run cannot write, whatever happens
        cursor.execute(classify_sql(connection, fields), _columns(batch))
        return cursor.fetchone()


def _batch_write(batch, fields, *, copy: bool, dry_run: bool, using: str) -> tuple[int, int]:
    """(inserted, updated) for one batch, committed in its own transaction (or only counted)."""
    if dry_run:
        return _classify(batch, fields, using)
    write = _copy_upsert if copy else _upsert
    written = batch_run(lambda: write(batch, fields, using), using=using, what="import batch")
    inserted = sum(written)
    return inserted, len(written) - inserted


def products_import(
    *,
    file: BinaryIO,
    batch_size: int | None = None,
    copy: bool = False,
    dry_run: bool = False,
    using: str = "default",
    progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """Import products from a CSV file opened in binary mode (see the module's docstring):
    rejects reported with their line numbers, the valid rows upserted on SKU in batches of
    ``batch_size`` (default 1,000, or 10,000 with ``copy``), or only counted with ``dry_run``."""
    size = batch_size or (COPY_BATCH_SIZE if copy else BATCH_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
        raise InvalidChange("batch_size", f"must be a whole number from 1 to {MAX_BATCH_SIZE:,}")
    started = time.monotonic()
    fields, total, rejects = _scan(file)
    report = ImportReport(fields=fields, rejects=rejects, dry_run=dry_run)
    writing = time.monotonic()  # the rate and ETA shown are the writing's own
    try:
        for batch in _batches(file, size):
            try:
                inserted, updated = _batch_write(
                    batch, fields, copy=copy, dry_run=dry_run, using=using
                )
            except (DatabaseError, psycopg.Error, ServiceTransactionFailed) as exc:
                raise ImportStopped(
                    stop_reason(exc),
                    rows_written=report.rows,
                    batches=report.batches,
                    line=batch[0].line,
                ) from exc
            report.rows += len(batch)
            report.inserted += inserted
            report.updated += updated
            report.unchanged += len(batch) - inserted - updated
            report.batches += 1
            if progress is not None:
                progress(ImportProgress(done=report.rows, total=total, started=writing))
    finally:
        report.seconds = time.monotonic() - started
        if not dry_run and report.inserted + report.updated:
            catalog_invalidate()  # once, after the last commit (or the last that happened)
    return report
