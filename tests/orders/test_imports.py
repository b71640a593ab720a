"""``manage.py import_products``: upserts on SKU in short batches, idempotent, bad lines reported by
line number with the documented exit codes, whole batches only when killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError
from django.db import connection

from orders.exceptions import ImportStopped
from orders.imports import products_import
from orders.models import Product
from orders.selectors import CATALOG_GENERATION_KEY
from tests.factories import product_create
from tests.helpers import ROOT, raw_connection, run_command, subprocess_env

# Tests that look from another session, kill connections or run the command in a process of its
# own commit for real (transaction=True); the others run in the test's transaction (faster).
pytestmark = pytest.mark.django_db
committing = pytest.mark.django_db(transaction=True)

HEADER = "sku,name,price,stock"


def lines(count: int, *, start: int = 1, prefix: str = "IM-", price: str = "9.99") -> list[str]:
    return [f"{prefix}{i:06d},Product {i},{price},{i % 50}" for i in range(start, start + count)]


def csv_file(tmp_path, body: list[str] | bytes, *, header: str = HEADER, name="products.csv"):
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    return path


def run(*args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``manage.py import_products``, run in this process."""
    out, err = StringIO(), StringIO()
    try:
        run_command("import_products", *map(str, args), stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


def stored() -> dict[str, tuple]:
    """Every product's values, version, and what PostgreSQL wrote to its row: a new row version
    for any update (``xmin``), a locker's transaction id even for a row lock (``xmax``)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sku, name, price, stock, description, version, xmin::text, xmax::text"
            " FROM orders_product"
        )
        return {row[0]: row[1:] for row in cursor.fetchall()}


def generation() -> int:
    return cache.get(CATALOG_GENERATION_KEY, 1)


@committing
def test_import_inserts_every_row_in_batches_and_the_same_file_again_changes_nothing(tmp_path):
    path = csv_file(tmp_path, lines(2500))
    before = generation()
    code, out, _ = run(path, "--batch-size", "1000")
    assert code == 0
    assert "2,500 inserted, 0 updated, 0 unchanged, 0 rejected, in 3 batches" in out
    assert "1,000 of 2,500 rows (40%)" in out and "2,500 of 2,500 rows (100%)" in out
    first = stored()
    assert len(first) == 2500
    assert first["IM-000007"][:5] == ("Product 7", Decimal("9.99"), 7, "", 1)
    assert generation() == before + 1, "the catalog is invalidated once, not once per batch"

    code, out, _ = run(path, "--batch-size", "1000")
    assert code == 0
    assert "0 inserted, 0 updated, 2,500 unchanged" in out
    # No row was written, nor even locked: no new row version (xmin), no locker (xmax), not one
    # version advanced.
    assert stored() == first
    assert generation() == before + 1, "nothing changed: the catalog stays cached"


def test_changed_rows_are_updated_and_advance_their_version_and_nothing_else_is_written(tmp_path):
    run(csv_file(tmp_path, lines(20)))
    first = stored()
    changed = lines(20)
    changed[4] = "IM-000005,Product five,9.99,5"  # name
    changed[9] = "IM-000010,Product 10,10.49,10"  # price
    changed[14] = "IM-000015,Product 15,9.990,15"  # the same price, written differently
    code, out, _ = run(csv_file(tmp_path, changed + lines(2, start=21)))
    assert code == 0
    assert "2 inserted, 2 updated, 18 unchanged" in out
    now = stored()
    assert now["IM-000005"][0] == "Product five" and now["IM-000005"][4] == 2
    assert now["IM-000010"][1] == Decimal("10.49") and now["IM-000010"][4] == 2
    untouched = set(first) - {"IM-000005", "IM-000010"}
    assert {sku: now[sku] for sku in untouched} == {sku: first[sku] for sku in untouched}
    assert now["IM-000021"][4] == 1


@committing  # each COPY batch's temporary table is dropped at a real commit
@pytest.mark.parametrize("copy", [[], ["--copy"]])
def test_description_is_set_only_by_a_file_that_has_the_column(tmp_path, copy):
    product_create(sku="D-1", description="Kept as it is.")
    run(csv_file(tmp_path, ["D-1,Renamed,1.00,1"]), *copy)
    assert Product.objects.get(sku="D-1").description == "Kept as it is."
    text = 'New, with a comma, a "quote", a tab\t, a back\\slash \\N,\nand a second line.'
    quoted = '"' + text.replace('"', '""') + '"'
    with_column = csv_file(
        tmp_path, [f"D-1,Renamed,1.00,1,{quoted}"], header=HEADER + ",description"
    )
    code, out, err = run(with_column, *copy)
    assert code == 0, err
    assert Product.objects.get(sku="D-1").description == text
    assert "1 unchanged" in run(with_column, *copy)[1]


def test_columns_may_come_in_any_order_with_a_byte_order_mark_and_windows_line_ends(tmp_path):
    body = "\ufeffStock,SKU,Price,Name\r\n3,W-1,2.50,Widget\r\n".encode()
    assert run(csv_file(tmp_path, body))[0] == 0
    product = Product.objects.get(sku="W-1")
    assert (product.name, product.price, product.stock) == ("Widget", Decimal("2.50"), 3)


# A good file around one bad line (line 4); (the bad line, what the report says about it).
BAD_LINES = [
    ("IM-000003,Product 3,12;50,3", "price '12;50' is not a plain amount"),
    ("IM-000003,Product 3,1e3,3", "price '1e3' is not a plain amount"),
    ("IM-000003,Product 3,1_000,3", "price '1_000' is not a plain amount"),
    ("IM-000003,Product 3,١٢,3", "price '١٢' is not a plain amount"),
    ("IM-000003,Product 3,0,3", "price '0': must be greater than zero"),
    ("IM-000003,Product 3,-5,3", "price '-5' is not a plain amount"),
    ("IM-000003,Product 3,1.005,3", "price '1.005': at most two decimal places"),
    ("IM-000003,Product 3,1000000000000,3", "price '1000000000000': at most"),
    ("IM-000003,Product 3,NaN,3", "price 'NaN' is not a plain amount"),
    ("IM-000003,Product 3,1.00,-1", "stock '-1' is not a whole number"),
    ("IM-000003,Product 3,1.00,2.5", "stock '2.5' is not a whole number"),
    ("IM-000003,Product 3,1.00,99999999999", "stock '99999999999' is not a whole number"),
    ("IM-000003,,1.00,3", "name is empty"),
    (" ,Product 3,1.00,3", "sku is empty"),
    ("IM-" + "3" * 40 + ",Product 3,1.00,3", "sku is longer than 40 characters"),
    ("IM-000003,Prod\x00uct,1.00,3", "name contains a control character"),
    ("IM-000003,Product 3,1.00", "3 fields where the header has 4: a truncated or broken line"),
    ("IM-000003,Product 3,1.00,3,extra", "5 fields where the header has 4"),
    ("IM-000001,Product 1 again,1.00,3", "SKU 'IM-000001' appears again (first on line 2)"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_a_bad_line_is_reported_with_its_line_number_and_the_others_are_written(
    tmp_path, bad, reason
):
    good = lines(5)
    path = csv_file(tmp_path, [*good[:2], bad, *good[3:]])
    code, _, err = run(path, "--batch-size", "2")
    assert code == 1
    assert f"{path}: line 4: {reason}" in err
    assert "1 rejected lines were not imported" in err
    # The good rows are written, those of the bad line's batch (lines 4 and 5) too.
    assert sorted(stored()) == ["IM-000001", "IM-000002", "IM-000004", "IM-000005"]
    assert Product.objects.get(sku="IM-000001").name == "Product 1"  # the first of a duplicate


def test_every_bad_line_is_reported_not_only_the_first(tmp_path):
    body = [*lines(3), "X-1,Thing,abc,1", "X-2,Thing,1.00", *lines(2, start=10), "X-3,,1,1"]
    code, out, err = run(csv_file(tmp_path, body))
    assert code == 1
    assert [line for line in err.splitlines() if ": line " in line] == [
        f"{tmp_path / 'products.csv'}: line 5: price 'abc' is not a plain amount such as 12.50",
        f"{tmp_path / 'products.csv'}: line 6: 3 fields where the header has 4: a truncated or broken line",
        f"{tmp_path / 'products.csv'}: line 9: name is empty",
    ]
    assert "5 inserted" in out and "3 rejected" in out


def test_a_quoted_field_over_several_lines_is_reported_at_the_line_where_it_starts(tmp_path):
    body = [*lines(2), 'IM-000003,"Product\n3",oops,3', *lines(1, start=4)]
    code, _, err = run(csv_file(tmp_path, body))
    assert code == 1
    assert "line 4: name contains a control character; price 'oops' is not a plain amount" in err
    assert "line 6" not in err and Product.objects.filter(sku="IM-000004").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "line 1: the file is empty: expected the header sku,name,price,stock"),
        (b"\n", "line 1: missing column 'sku', 'name', 'price', 'stock'"),
        (b"sku,name,price,stock,colour\nA,B,1,1,red\n", "line 1: unknown column 'colour'"),
        (b"sku,name,price\nA,B,1\n", "line 1: missing column 'stock'"),
        (b"sku,name,price,stock,price\nA,B,1,1,1\n", "line 1: column 'price' appears twice"),
        (
            "sku,name,price,stock\nA-1,Good,1.00,1\nA-2,Good,1.00,1\nA-3,Caf\u00e9,1.00,1\n".encode(
                "latin-1"
            ),
            "line 4: not UTF-8 (byte 0xe9",
        ),
        ("sku,name,price,stock\nA-1,Good,1.00,1\n".encode("utf-16"), "line 1: not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_imported_exits_2_naming_the_line_and_writes_nothing(
    tmp_path, content, message
):
    code, _, err = run(csv_file(tmp_path, content))
    assert code == 2
    assert message in err
    assert Product.objects.count() == 0


def test_a_missing_file_or_bad_arguments_exit_2(tmp_path):
    code, _, err = run(tmp_path / "nowhere.csv")
    assert code == 2 and "Cannot read" in err and "No such file or directory" in err
    assert run(tmp_path)[0] == 2  # a directory
    code, _, err = run(csv_file(tmp_path, lines(1)), "--batch-size", "0")
    assert code == 2 and "--batch-size must be from 1" in err
    code, _, err = run(csv_file(tmp_path, lines(1)), "--database", "elsewhere")
    assert code == 2 and "'elsewhere' is not a database alias" in err
    assert Product.objects.count() == 0


def test_dry_run_reports_inserts_updates_and_rejects_and_writes_nothing(tmp_path):
    run(csv_file(tmp_path, lines(4)))
    before, catalog = stored(), generation()
    body = [*lines(2), "IM-000003,Renamed,9.99,3", *lines(1, start=4), *lines(2, start=5)]
    body.append("IM-000009,Bad,1e3,1")
    code, out, err = run(csv_file(tmp_path, body), "--dry-run")
    assert code == 1 and "line 8: price '1e3'" in err
    assert "2 would be inserted, 1 would be updated, 3 unchanged, 1 rejected" in out
    assert "Dry run: nothing was written." in out
    assert stored() == before and generation() == catalog

    code, out, _ = run(csv_file(tmp_path, body[:-1]), "--dry-run")
    assert code == 0 and stored() == before


@committing
def test_each_batch_commits_on_its_own_so_no_transaction_spans_the_import(tmp_path):
    seen = []

    def progress(p):
        # Between batches: no transaction open here, and another session sees every row done.
        with raw_connection() as other:
            visible = other.execute("SELECT count(*) FROM orders_product").fetchone()[0]
        seen.append((connection.in_atomic_block, p.done, visible))

    with open(csv_file(tmp_path, lines(250)), "rb") as file:
        products_import(file=file, batch_size=100, progress=progress)
    assert seen == [(False, 100, 100), (False, 200, 200), (False, 250, 250)]


def kill_before_batch(number: int, marker: str):
    """An execute wrapper that terminates the connection's backend just before the ``number``-th
    statement containing ``marker``, as a crash or a failover would."""
    count = [0]

    def wrapper(execute, sql, params, many, context):
        if marker in sql:
            count[0] += 1
            if count[0] == number:
                with raw_connection() as other:
                    other.execute(
                        "SELECT pg_terminate_backend(%s)",
                        [connection.connection.execute("SELECT pg_backend_pid()").fetchone()[0]],
                    )
        return execute(sql, params, many, context)

    return wrapper


@committing
@pytest.mark.parametrize(("copy", "marker"), [(False, "ON CONFLICT"), (True, "CREATE TEMPORARY")])
def test_a_connection_killed_between_batches_leaves_whole_batches_and_a_rerun_finishes(
    tmp_path, copy, marker
):
    path = csv_file(tmp_path, lines(500))
    with open(path, "rb") as file, connection.execute_wrapper(kill_before_batch(3, marker)):
        with pytest.raises(ImportStopped) as stopped:
            products_import(file=file, batch_size=100, copy=copy)
    connection.close()
    assert stopped.value.batches == 2 and stopped.value.line == 202
    assert "Run the same file again to finish" in str(stopped.value)
    assert sorted(stored()) == [f"IM-{i:06d}" for i in range(1, 201)]  # batches 1 and 2, whole

    code, out, _ = run(path, "--batch-size", "100", *(["--copy"] if copy else []))
    assert code == 0 and "300 inserted, 0 updated, 200 unchanged" in out
    assert {row[4] for row in stored().values()} == {1}, "a row was written twice"


@committing
def test_a_process_killed_mid_import_leaves_whole_batches_and_a_rerun_finishes(tmp_path):
    path = csv_file(tmp_path, lines(20_000))
    process = subprocess.Popen(
        [sys.executable, "manage.py", "import_products", str(path), "--batch-size", "10"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    with raw_connection() as observer:
        while observer.execute("SELECT count(*) FROM orders_product").fetchone()[0] < 50:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the import made no progress"
            time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    # Its server session ends when PostgreSQL notices the client is gone: wait for that, so no
    # statement of the killed import is still running when the rows are counted.
    with raw_connection() as observer:
        while observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the killed import's session lingers"
            time.sleep(0.01)

    rows = stored()
    done = len(rows)
    assert 50 <= done < 20_000 and done % 10 == 0, "a batch was committed in part"
    assert sorted(rows) == [f"IM-{i:06d}" for i in range(1, done + 1)]
    code, out, _ = run(path, "--batch-size", "1000")
    assert code == 0 and f"{20_000 - done:,} inserted, 0 updated, {done:,} unchanged" in out
    assert {row[4] for row in stored().values()} == {1}


@committing
@pytest.mark.parametrize(
    ("body", "status"),
    [(lines(3), 0), ([*lines(2), "IM-9,Bad,1e3,1"], 1), (b"sku,colour\n", 2)],
)
def test_the_command_exits_0_1_or_2_as_a_process(tmp_path, body, status):
    result = subprocess.run(
        [sys.executable, "manage.py", "import_products", str(csv_file(tmp_path, body))],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_on_a_terminal(tmp_path):
    out = Terminal()
    run_command(
        "import_products", str(csv_file(tmp_path, lines(30))), "--batch-size", "10", stdout=out
    )
    bars = out.getvalue().split("\r")
    assert bars[1].startswith("[##########....................] 33.3%  10 of 30 rows")
    assert bars[3].startswith("[##############################] 100.0%  30 of 30 rows")
    assert "30 inserted" in bars[3]


def test_help_names_every_option_and_the_exit_codes():
    from orders.management.commands.import_products import Command

    text = " ".join(Command().create_parser("manage.py", "import_products").format_help().split())
    for option in ("FILE.csv", "--batch-size", "--copy", "--dry-run", "--database"):
        assert option in text
    assert "0 every row written, 1 rows rejected" in text and "2 the file cannot be read" in text


@committing
def test_an_import_of_100_000_products_through_the_command_then_again_unchanged(tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as file:
        file.write(HEADER + "\n")
        file.writelines(
            f"BIG-{i:06d},Product {i},{i % 997 + 1}.{i % 100:02d},{i % 500}\n"
            for i in range(100_000)
        )
    code, out, _ = run(path)
    assert code == 0 and "100,000 inserted" in out
    assert Product.objects.count() == 100_000
    code, out, _ = run(path, "--copy")
    assert code == 0 and "0 inserted, 0 updated, 100,000 unchanged" in out
    assert Product.objects.filter(version=1).count() == 100_000
