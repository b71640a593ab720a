"""backfill_column against real tables; an audit trigger counts every update of every row."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from dbops.backfill import BackfillOptions, Expression, plan_build
from dbops.models import BackfillRun, BackfillStatus
from tests.dbops_testapp.models import Parent
from tests.helpers import ROOT, killed_before, raw_connection, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

FILL = [
    "dbops_testapp.Parent",
    "name",
    "--expression",
    "upper(name)",
    "--where",
    "name <> upper(name)",
]


@pytest.fixture
def parents():
    """Parents with lower-case names, and a trigger recording each update of a name."""
    Parent.objects.bulk_create(
        [Parent(sku=f"B-{i:04d}", name=f"thing {i}", stock=1) for i in range(1, 201)]
    )
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE backfill_audit (parent_id bigint NOT NULL)")
        cursor.execute(
            """
            CREATE FUNCTION backfill_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO backfill_audit VALUES (NEW.id); RETURN NEW; END $$
            """
        )
        cursor.execute(
            "CREATE TRIGGER backfill_audit AFTER UPDATE OF name ON dbops_testapp_parent FOR EACH ROW EXECUTE FUNCTION backfill_audit_row()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS backfill_audit ON dbops_testapp_parent")
        cursor.execute("DROP FUNCTION IF EXISTS backfill_audit_row()")
        cursor.execute("DROP TABLE IF EXISTS backfill_audit")


def updates_per_row() -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT parent_id, count(*) FROM backfill_audit GROUP BY parent_id")
        return dict(cursor.fetchall())


def names_left() -> int:
    return Parent.objects.exclude(name__regex=r"^[^a-z]*$").count()


def run(*args, **kwargs):
    out = StringIO()
    call_command("backfill_column", *args, stdout=out, stderr=out, **kwargs)
    return out.getvalue()


def test_fills_every_row_once_in_batches(parents):
    output = run(*FILL, "--batch-size", "17")
    assert names_left() == 0
    counts = updates_per_row()
    assert len(counts) == 200 and set(counts.values()) == {1}
    run_ = BackfillRun.objects.get()
    assert (run_.status, run_.rows_done, run_.target) == (
        BackfillStatus.DONE,
        200,
        "dbops_testapp.Parent.name",
    )
    assert run_.batches >= 2
    assert "Done: dbops_testapp.Parent.name: 200 rows" in output


def test_plain_progress_lines_when_not_on_a_terminal(parents):
    output = run(*FILL, "--batch-size", "10", "--target-batch-ms", "1000000")
    assert "dbops_testapp.Parent.name: " in output and "rows/s, ETA" in output


def test_dry_run_prints_the_plan_and_writes_nothing(parents):
    output = run(*FILL, "--dry-run")
    assert 'UPDATE "dbops_testapp_parent" SET "name" = (upper(name))' in output
    assert "Rows to fill now: 200" in output
    assert names_left() == 200 and updates_per_row() == {}
    assert BackfillRun.objects.count() == 0


def test_value_and_from_field_sources(parents):
    run("dbops_testapp.Parent", "name", "--value", "Renamed", "--where", "id % 2 = 0")
    assert Parent.objects.filter(name="Renamed").count() == 100
    run("dbops_testapp.Parent", "name", "--from-field", "sku", "--where", "name = 'Renamed'")
    assert Parent.objects.filter(name__startswith="B-").count() == 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope.Parent", "name", "--value", "x"], "Unknown model 'nope.Parent'"),
        (["dbops_testapp.Nope", "name", "--value", "x"], "Unknown model 'dbops_testapp.Nope'"),
        (["Parent", "name", "--value", "x"], "give it as app_label.Model"),
        (["dbops_testapp.Parent", "colour", "--value", "x"], "has no field 'colour'"),
        (["dbops_testapp.Parent", "id", "--value", "1"], "is the primary key"),
        (["dbops_testapp.Parent", "children", "--value", "1"], "not a column"),
        (
            ["dbops_testapp.Parent", "name"],
            "Give exactly one of --value, --from-field or --expression.",
        ),
        (
            ["dbops_testapp.Parent", "name", "--value", "x", "--expression", "'y'"],
            "got value, expression",
        ),
        (
            ["dbops_testapp.Parent", "name", "--expression", "lower(no_such_column)"],
            "PostgreSQL rejects this backfill",
        ),
        (
            ["dbops_testapp.Parent", "name", "--expression", "lower(name", "--where", "true"],
            "PostgreSQL rejects this backfill",
        ),
        (
            ["dbops_testapp.Parent", "name", "--value", "x", "--where", "stock >>> 1"],
            "PostgreSQL rejects this backfill",
        ),
        (
            [
                "dbops_testapp.Parent",
                "name",
                "--expression",
                "'a'; DROP TABLE dbops_testapp_parent",
            ],
            "PostgreSQL rejects this backfill",
        ),
        (
            ["dbops_testapp.Parent", "stock", "--value", "many"],
            "does not fit dbops_testapp.Parent.stock",
        ),
        (
            ["dbops_testapp.Parent", "name", "--value", "x" * 201],
            "does not fit dbops_testapp.Parent.name",
        ),
        (["dbops_testapp.Parent", "name", "--from-field", "nope"], "no field 'nope' to copy from"),
        (
            ["dbops_testapp.Parent", "name", "--value", "x", "--batch-size", "0"],
            "--batch-size must be at least 1",
        ),
        (
            ["dbops_testapp.Parent", "name", "--value", "x", "--database", "elsewhere"],
            "Unknown database alias",
        ),
    ],
)
def test_bad_input_is_a_command_error_before_anything_is_written(parents, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(*args)
    assert names_left() == 200 and updates_per_row() == {}
    assert BackfillRun.objects.count() == 0
    assert Parent.objects.count() == 200


# SQL that closes the batch statement's parentheses and CTE, so that each part around the DELETE is
# a valid statement of its own: only a one-statement cursor stops it, not a syntax error.
SECOND_STATEMENT = (
    "SELECT 1; DELETE FROM dbops_testapp_parent; WITH next_keys AS (SELECT 1 AS id), filled AS"
)


@pytest.mark.parametrize(
    "args",
    [
        [
            "--expression",
            "upper(name)",
            "--where",
            f"true) RETURNING 1) {SECOND_STATEMENT} (UPDATE dbops_testapp_parent SET name = name WHERE (false",  # noqa: S608 (the attack under test)
        ],
        [
            "--expression",
            f"name) WHERE false RETURNING 1) {SECOND_STATEMENT} (UPDATE dbops_testapp_parent SET name = (name",  # noqa: S608 (the attack under test)
        ],
    ],
    ids=["where", "expression"],
)
def test_sql_that_smuggles_in_a_second_statement_is_refused_and_runs_nothing(parents, args):
    with pytest.raises(CommandError, match="PostgreSQL rejects this backfill"):
        run("dbops_testapp.Parent", "name", *args)
    assert Parent.objects.count() == 200
    assert names_left() == 200 and updates_per_row() == {}


def slow_run_under_way(terminal: int | None = None) -> subprocess.Popen:
    """``backfill_column`` in a process of its own, returned once 20 rows are committed; its
    output on ``terminal`` (a pseudo-terminal's file descriptor) when given."""
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "backfill_column",
            *FILL,
            "--batch-size",
            "5",
            "--target-batch-ms",
            "1000000",
            "--sleep",
            "0.05",
        ],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL if terminal is None else terminal,
        stderr=subprocess.PIPE if terminal is None else terminal,
    )
    deadline = time.monotonic() + 30
    while BackfillRun.objects.filter(rows_done__gte=20).count() == 0:
        assert process.poll() is None, "" if terminal else process.stderr.read().decode()
        assert time.monotonic() < deadline, "the subprocess made no progress"
        time.sleep(0.02)
    return process


def test_resume_after_sigkill_fills_every_row_exactly_once(parents):
    process = slow_run_under_way()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)

    killed = BackfillRun.objects.get()
    assert killed.status == BackfillStatus.RUNNING  # never got to say otherwise
    assert 20 <= killed.rows_done < 200
    assert names_left() == 200 - killed.rows_done  # the checkpoint names exactly the rows done

    output = run(*FILL)
    assert (
        f"Resuming run #{killed.pk} after id {int(killed.last_key[0]):,}, "
        f"{killed.rows_done:,} rows done already." in output
    )
    resumed = BackfillRun.objects.get()
    assert (
        resumed.pk == killed.pk
        and resumed.status == BackfillStatus.DONE
        and resumed.rows_done == 200
    )
    assert names_left() == 0
    counts = updates_per_row()
    assert len(counts) == 200 and set(counts.values()) == {1}, "a row was updated twice"
    assert "Done" in output


def test_ctrl_c_says_how_to_resume_without_a_traceback_and_resume_finishes(parents):
    process = slow_run_under_way()
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=10)[1].decode()
    assert process.returncode == 130
    assert "Interrupted" in stderr and "run the same command again" in stderr
    assert "Traceback" not in stderr

    interrupted = BackfillRun.objects.get()
    assert names_left() == 200 - interrupted.rows_done  # the checkpoint names exactly the rows done
    run(*FILL)
    assert names_left() == 0
    assert set(updates_per_row().values()) == {1}, "a row was updated twice"


def test_ctrl_c_on_a_terminal_says_interrupted_on_a_line_of_its_own(parents):
    """On a terminal the progress bar rewrites one line with no newline; the message used to be
    printed on the end of it."""
    import pty

    main, terminal = pty.openpty()
    process = slow_run_under_way(terminal=terminal)
    os.close(terminal)
    process.send_signal(signal.SIGINT)
    process.wait(10)
    output = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: everything was read
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.decode())  # the colours of a terminal
    assert process.returncode == 130
    assert "ETA" in text  # the bar was drawn
    line = next(line for line in text.splitlines() if "Interrupted" in line)
    assert line.startswith("CommandError: Interrupted."), repr(line)


def test_statement_timeout_retries_then_splits_the_batch(parents):
    slow = [
        "dbops_testapp.Parent",
        "name",
        "--expression",
        "(SELECT upper(name) FROM pg_sleep(0.01 + 0 * length(name)))",
        "--where",
        "name <> upper(name) AND id <= (SELECT min(id) + 39 FROM dbops_testapp_parent)",
    ]
    run(*slow, "--batch-size", "40", "--statement-timeout-ms", "150", "--target-batch-ms", "50")
    result = BackfillRun.objects.get()
    assert result.status == BackfillStatus.DONE
    assert result.retries >= 1 and result.splits >= 1
    counts = updates_per_row()
    assert len(counts) == 40 and set(counts.values()) == {1}


def test_a_run_that_cannot_go_on_fails_keeping_its_checkpoint(parents):
    first_id = Parent.objects.order_by("pk").first().pk
    failing = [
        "dbops_testapp.Parent",
        "name",
        "--expression",
        f"CASE WHEN id < {first_id + 50} THEN upper(name) END",
        "--where",
        "name <> upper(name)",
    ]
    with pytest.raises(
        CommandError, match="keeps its checkpoint; fix the cause and run the same command again"
    ):
        run(*failing, "--batch-size", "10", "--target-batch-ms", "1000000")
    failed = BackfillRun.objects.get()
    assert failed.status == BackfillStatus.FAILED and "null value" in failed.last_error
    assert failed.rows_done == 50 and failed.last_key == [str(first_id + 49)]
    assert names_left() == 150


# Not idempotent, on every row: a row filled twice ends in "!!".
APPEND = ["dbops_testapp.Parent", "name", "--expression", "name || '!'", "--where", "true"]


def filled_once() -> bool:
    counts = updates_per_row()
    return (
        len(counts) == 200
        and set(counts.values()) == {1}
        and Parent.objects.filter(name__endswith="!").count() == 200
        and not Parent.objects.filter(name__endswith="!!").exists()
    )


def test_a_kill_between_a_batch_and_its_checkpoint_loses_both(parents):
    """The checkpoint commits in the batch's transaction: killed just before it, the batch's rows
    roll back with it, and the run (which reconnects and goes on from its last checkpoint) fills
    them once. Were the checkpoint written after the batch committed, they would be filled twice."""
    error = killed_before('SET "last_key"', lambda: run(*APPEND, "--batch-size", "50"))
    assert error is None  # the lost batch was retried on a new connection
    assert filled_once()
    finished = BackfillRun.objects.get()
    assert (finished.status, finished.rows_done) == (BackfillStatus.DONE, 200)


@pytest.fixture
def row_refusing_updates(parents):
    """A trigger refusing any update of one row (the 121st): a run stops right before it."""
    stop = Parent.objects.order_by("pk")[120].pk
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.id = {int(stop)} THEN
                    RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        cursor.execute(
            "CREATE TRIGGER refuse_row BEFORE UPDATE ON dbops_testapp_parent"
            " FOR EACH ROW EXECUTE FUNCTION refuse_row()"
        )

    def lift():
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_row ON dbops_testapp_parent")
            cursor.execute("DROP FUNCTION IF EXISTS refuse_row()")

    yield stop, lift
    lift()


def test_a_run_resumes_after_its_checkpoint_not_from_the_start(row_refusing_updates):
    stop, lift = row_refusing_updates
    with pytest.raises(CommandError, match="keeps its checkpoint"):
        run(*APPEND, "--batch-size", "16")
    stopped = BackfillRun.objects.get()
    assert stopped.last_key == [str(stop - 1)] and stopped.rows_done == 120
    lift()
    run(*APPEND, "--batch-size", "16")
    assert filled_once()
    assert BackfillRun.objects.get().rows_done == 200


def test_batches_grow_toward_the_target_duration(parents):
    run(*FILL, "--batch-size", "5", "--target-batch-ms", "1000000")
    result = BackfillRun.objects.get()
    # 5, 10, 20, 40, 80, then 160 takes the last 45 rows; a fixed size would take 40 batches.
    assert (result.batches, result.batch_size) == (6, 160)
    assert names_left() == 0


def test_batches_shrink_when_they_take_longer_than_the_target(parents):
    slow = ["dbops_testapp.Parent", "name", "--where", "name <> upper(name)", "--expression"]
    slow.append("(SELECT upper(name) FROM pg_sleep(0.002 + 0 * length(name)))")
    run(*slow, "--batch-size", "64", "--target-batch-ms", "20")
    result = BackfillRun.objects.get()
    # 64 rows take over 128 ms: each batch halves, to the few rows that fit in 20 ms.
    assert result.batch_size <= 16 and result.batches >= 8
    assert names_left() == 0


def test_different_options_for_an_unfinished_run_are_refused_and_restart_starts_over(parents):
    first_id = Parent.objects.order_by("pk").first().pk
    with pytest.raises(CommandError):
        run(
            "dbops_testapp.Parent",
            "name",
            "--expression",
            f"CASE WHEN id < {first_id + 10} THEN upper(name) END",
            "--where",
            "name <> upper(name)",
            "--batch-size",
            "10",
        )
    with pytest.raises(CommandError, match="used different options"):
        run(*FILL)
    run(*FILL, "--restart")
    assert names_left() == 0
    assert sorted(BackfillRun.objects.values_list("status", flat=True)) == ["abandoned", "done"]


def held_run(owner: str, *, lapsed: bool = False) -> BackfillRun:
    """An unfinished run of FILL's target whose lease ``owner`` holds (or held, ``lapsed``)."""
    run = BackfillRun.objects.create(
        target="dbops_testapp.Parent.name",
        options={"expression": "upper(name)", "where": "name <> upper(name)"},
        lease_owner=owner,
    )
    minutes = -1 if lapsed else 1
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dbops_backfillrun SET lease_expires_at = now() + make_interval(mins => %s)"
            " WHERE id = %s",
            [minutes, run.pk],
        )
    return run


def test_a_second_run_of_the_same_target_at_once_is_refused(parents):
    held_run("worker-7.example:4242:abc")  # another machine's live lease
    with pytest.raises(
        CommandError, match="Another backfill of dbops_testapp.Parent.name is running"
    ):
        run(*FILL)
    assert names_left() == 200


def test_a_lapsed_lease_is_taken_over(parents):
    held = held_run("worker-7.example:4242:abc", lapsed=True)
    run(*FILL)
    held.refresh_from_db()
    assert (held.status, held.rows_done, held.lease_owner) == (BackfillStatus.DONE, 200, "")
    assert names_left() == 0


def test_a_run_that_lost_its_lease_writes_no_more_batches(parents):
    stolen = []

    def steal_the_lease(execute, sql, params, many, context):
        if 'SET "last_key"' in sql and not stolen:
            stolen.append(True)
            with raw_connection() as other:
                other.execute("UPDATE dbops_backfillrun SET lease_owner = 'elsewhere:1:x'")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(steal_the_lease):
        with pytest.raises(CommandError, match="lost its lease"):
            run(*FILL, "--batch-size", "50")
    assert names_left() == 200  # the batch that found its lease gone rolled back


def test_a_run_leaves_no_session_state_behind(parents):
    run(*FILL)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"
    assert BackfillRun.objects.get().lease_owner == ""


def test_help_names_every_option():
    result = subprocess.run(
        [sys.executable, "manage.py", "backfill_column", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for option in [
        "--value",
        "--from-field",
        "--expression",
        "--where",
        "--batch-size",
        "--target-batch-ms",
        "--sleep",
        "--lock-timeout-ms",
        "--statement-timeout-ms",
        "--dry-run",
        "--restart",
        "--database",
    ]:
        assert option in result.stdout


def test_a_batch_reads_its_rows_by_primary_key_even_when_the_filter_matches_the_whole_table():
    # 50,000 rows, every one matching the row filter, stored in no particular order of their
    # keys (as after a table-wide UPDATE): a batch of 100 must still be 100 index lookups.
    # Bounding the UPDATE by a range read from a CTE let the planner pick a sequential scan of
    # the whole table for every batch (seen on 2,000,000 rows: 0.6 s a batch).
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO dbops_testapp_parent (id, sku, name, region, stock, balance, version, note)"
            " SELECT 1000000 + i, 'S-' || i, 'thing ' || i, 'north', 1, 1, 1, ''"
            " FROM generate_series(1, 50000) AS i ORDER BY random()"
        )
        cursor.execute("ANALYZE dbops_testapp_parent")
    plan = plan_build(
        BackfillOptions(
            "dbops_testapp.Parent", "name", Expression("upper(name)"), where="name <> upper(name)"
        )
    )
    # Whatever the planner's costs: random reads made dear, a range estimated at a third of the
    # table (all it knows of a bound read from a CTE) is cheaper to read in one sequential scan.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('random_page_cost', '20', true)")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {plan.update_sql()}", {"after_0": "0", "limit": 100})
        explained = json.dumps(cursor.fetchone()[0])
    assert '"Seq Scan"' not in explained, explained
    assert explained.count('"Index Name": "dbops_testapp_parent_pkey"') == 2  # the keys, the update
