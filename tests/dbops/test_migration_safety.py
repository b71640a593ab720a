"""The migration safety check: each rule refuses a bad migration, accepts the safe form, and is
silenced by a reviewed marker for exactly that finding; `check` and `migrate` run it."""

import importlib
import sys
import uuid
from pathlib import Path

import pytest
from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.operations import AddConstraintNotValid
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, migrations, models
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ModelState
from django.db.migrations.writer import MigrationWriter
from django.db.models.functions import Now, Random

import dbops.migrations
from dbops import migration_safety as safety
from dbops.operations import (
    AddForeignKeyNotValid,
    AddIndexConcurrently,
    AddUniqueConstraintConcurrently,
    RequireNoNulls,
    SafeDeleteModel,
    SafeRemoveField,
    SetNotNullPhased,
    ValidateConstraintWithLockTimeout,
    index_state,
)


def project_state():
    return MigrationLoader(None, ignore_no_migrations=True).project_state()


def migration(*operations, reviewed=None, app_label="dbops_testapp"):
    built = migrations.Migration("0099_under_test", app_label)
    built.operations = list(operations)
    if reviewed is not None:
        built.reviewed_unsafe = reviewed
    return built


def messages(*operations, reviewed=None, state=None):
    return safety.migration_messages(
        migration(*operations, reviewed=reviewed), state or project_state(), connection
    )


def found(*operations, reviewed=None, state=None):
    """(operation index, rule id) of each finding left after reviews, then the review messages."""
    findings, review_messages = safety.reviewed_findings(
        migration(*operations, reviewed=reviewed), state or project_state(), connection
    )
    return [(f.index, f.issue.id) for f in findings] + [m.id for m in review_messages]


def char(**kwargs):
    return models.CharField(max_length=10, null=True, **kwargs)  # noqa: DJ001


def nullable_fk(**kwargs):
    return models.ForeignKey(
        "dbops_testapp.parent", null=True, on_delete=models.SET_NULL, related_name="+", **kwargs
    )


def uuid_v4():
    return models.Func(function="gen_random_uuid", output_field=models.UUIDField())


(E101, E102, E103, E104, E105, E106, E107, E108, E109) = safety.RULES[:9]
(E110, E111, E112, E113, E114, E115, E116, E117) = safety.RULES[9:]


def copy_description(apps, schema_editor):
    """A data migration (never run here: the check reads it)."""


BACKFILLED = RequireNoNulls(
    "parent", "sku", "python manage.py backfill_column dbops_testapp.Parent ..."
)
OWNER_WITHOUT_CONSTRAINT = models.ForeignKey(
    "auth.user",
    on_delete=models.CASCADE,
    null=True,
    blank=True,
    related_name="+",
    db_constraint=False,
)

# rule, a bad migration, its findings, and a safe migration that does the same without blocking
CASES = {
    "add_index": (
        [migrations.AddIndex("child", models.Index(fields=["note"], name="child_note"))],
        [(0, E101)],
        [AddIndexConcurrently("child", models.Index(fields=["note"], name="child_note"))],
    ),
    "add_field_with_index": (
        [migrations.AddField("child", "memo", char(db_index=True))],
        [(0, E101)],
        [
            migrations.AddField("child", "memo", char()),
            AddIndexConcurrently("child", models.Index(fields=["memo"], name="child_memo")),
        ],
    ),
    "add_unique_constraint": (
        [
            migrations.AddConstraint(
                "parent", models.UniqueConstraint(fields=["name"], name="parent_name_unique")
            )
        ],
        [(0, E102)],
        [
            AddUniqueConstraintConcurrently(
                "parent", models.UniqueConstraint(fields=["name"], name="parent_name_unique")
            )
        ],
    ),
    "add_check_constraint": (
        [
            migrations.AddConstraint(
                "child", models.CheckConstraint(condition=models.Q(quantity__lt=10**9), name="cap")
            )
        ],
        [(0, E102)],
        [
            AddConstraintNotValid(
                "child", models.CheckConstraint(condition=models.Q(quantity__lt=10**9), name="cap")
            ),
            ValidateConstraintWithLockTimeout("child", "cap"),
        ],
    ),
    "alter_field_unique": (
        [migrations.AlterField("parent", "name", models.CharField(max_length=200, unique=True))],
        [(0, E102)],
        [
            AddUniqueConstraintConcurrently(
                "parent", models.UniqueConstraint(fields=["name"], name="parent_name_unique")
            )
        ],
    ),
    "add_foreign_key": (
        [migrations.AddField("child", "referrer", nullable_fk())],
        [(0, E101), (0, E103)],
        [
            migrations.AddField(
                "child", "referrer", nullable_fk(db_constraint=False, db_index=False)
            ),
            AddForeignKeyNotValid("child", "referrer", "child_referrer_fk"),
            ValidateConstraintWithLockTimeout("child", "child_referrer_fk"),
        ],
    ),
    "alter_field_type": (
        [migrations.AlterField("parent", "stock", models.BigIntegerField(default=0))],
        [(0, E104)],
        [migrations.AlterField("parent", "name", models.CharField(max_length=300))],
    ),
    "add_field_volatile_db_default": (
        [migrations.AddField("child", "token", models.UUIDField(db_default=uuid_v4()))],
        [(0, E105)],
        [
            migrations.AddField("child", "token", models.UUIDField(null=True)),
            migrations.AlterField(
                "child", "token", models.UUIDField(null=True, db_default=uuid_v4())
            ),
        ],
    ),
    "add_field_not_null_without_default": (
        [migrations.AddField("child", "memo", models.CharField(max_length=10))],
        [(0, E106)],
        [migrations.AddField("child", "memo", models.CharField(max_length=10, db_default=""))],
    ),
    "alter_field_not_null": (
        [migrations.AlterField("child", "key", models.CharField(max_length=40, unique=True))],
        [(0, E107)],
        [SetNotNullPhased("child", "key")],
    ),
    "run_sql_create_index": (
        [migrations.RunSQL("CREATE INDEX child_note ON dbops_testapp_child (note)")],
        [(0, E108)],
        [migrations.RunSQL("CREATE INDEX CONCURRENTLY child_note ON dbops_testapp_child (note)")],
    ),
    "run_sql_alter_table": (
        [migrations.RunSQL("ALTER TABLE dbops_testapp_child ADD COLUMN memo text")],
        [(0, E109)],
        [
            migrations.RunSQL(
                "SET LOCAL lock_timeout = '3s'; ALTER TABLE dbops_testapp_child ADD COLUMN memo text"
            )
        ],
    ),
    "remove_field": (
        [migrations.RemoveField("parent", "description")],
        [(0, E110)],
        [SafeRemoveField("parent", "description", stage="pending")],
    ),
    "delete_model": (
        [migrations.DeleteModel("Child")],
        [(0, E111)],
        [SafeDeleteModel("Child", stage="pending")],
    ),
    "remove_foreign_key_field": (
        [migrations.RemoveField("parent", "owner")],
        [(0, E112), (0, E110)],
        [
            migrations.AlterField("parent", "owner", OWNER_WITHOUT_CONSTRAINT),
            SafeRemoveField("parent", "owner", stage="pending"),
        ],
    ),
    "rename_field": (
        [migrations.RenameField("parent", "name", "title")],
        [(0, E113)],
        [
            migrations.AlterField(
                "parent", "name", models.CharField(max_length=200, db_column="name")
            ),
            migrations.RenameField("parent", "name", "title"),
        ],
    ),
    "rename_model": (
        [migrations.RenameModel("Child", "Charge")],
        [(0, E114)],
        [
            migrations.AlterModelTable("child", "dbops_testapp_child"),
            migrations.RenameModel("Child", "Charge"),
        ],
    ),
    "add_field_python_default": (
        [migrations.AddField("child", "memo", models.CharField(max_length=10, default=""))],
        [(0, E115)],
        [migrations.AddField("child", "memo", models.CharField(max_length=10, db_default=""))],
    ),
    "long_identifier": (
        [AddIndexConcurrently("child", models.Index(fields=["note"], name="o" * 64))],
        [(0, E116)],
        [AddIndexConcurrently("child", models.Index(fields=["note"], name="o" * 63))],
    ),
    "run_python": (
        [migrations.RunPython(copy_description, migrations.RunPython.noop)],
        [(0, E117)],
        [BACKFILLED],
    ),
    "run_sql_update": (
        [migrations.RunSQL("UPDATE dbops_testapp_child SET note = 'paid' WHERE note = 'new'")],
        [(0, E117)],
        [BACKFILLED],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_rule_refuses_the_blocking_form(case):
    bad, findings, _safe = CASES[case]
    assert found(*bad) == findings


@pytest.mark.parametrize("case", CASES)
def test_rule_accepts_the_safe_form(case):
    _bad, _findings, safe = CASES[case]
    assert found(*safe) == []


@pytest.mark.parametrize("case", CASES)
def test_reviewed_marker_silences_exactly_that_finding(case):
    bad, findings, _safe = CASES[case]
    other = migrations.AddIndex("parent", models.Index(fields=["name"], name="parent_name"))
    operations = [*bad, other]
    everything = found(*operations)
    assert everything == [*findings, (len(bad), E101)]
    for key in findings:
        rest = found(*operations, reviewed={key: "the table has 12 rows and never grows"})
        assert rest == [f for f in everything if f != key]


def test_the_cases_cover_every_rule():
    covered = {rule for _bad, findings, _safe in CASES.values() for _index, rule in findings}
    assert covered == set(safety.RULES)


def test_messages_name_the_migration_the_operation_and_what_to_use_instead():
    [error] = messages(migrations.AddIndex("child", models.Index(fields=["note"], name="o_s")))
    assert error.id == "dbops.E101"
    assert error.msg.startswith("dbops_testapp.0099_under_test, operation 0 (AddIndex: ")
    assert "Instead: dbops.operations.AddIndexConcurrently in a migration with atomic = False" in (
        error.msg
    )
    assert 'reviewed_unsafe = {(0, "dbops.E101"): "<why it is safe>"}' in error.hint


def test_operations_on_a_table_created_in_the_same_migration_are_fine():
    create = migrations.CreateModel(
        "Scratch", [("id", models.BigAutoField(primary_key=True)), ("code", models.IntegerField())]
    )
    assert (
        found(
            create,
            migrations.AddIndex("scratch", models.Index(fields=["code"], name="scratch_code")),
            migrations.AddField("scratch", "owner", nullable_fk()),
            migrations.AlterField("scratch", "code", models.BigIntegerField()),
            migrations.RunSQL("ALTER TABLE dbops_testapp_scratch ADD COLUMN note text"),
            migrations.RunSQL("CREATE TABLE side (id int); CREATE INDEX ON side (id)"),
        )
        == []
    )


def test_unmanaged_models_and_many_to_many_fields_are_not_checked():
    unmanaged = migrations.CreateModel(
        "Remote", [("id", models.BigAutoField(primary_key=True))], options={"managed": False}
    )
    state = project_state()
    unmanaged.state_forwards("dbops_testapp", state)
    assert (
        found(
            migrations.AddIndex("remote", models.Index(fields=["id"], name="remote_id")),
            migrations.AddField("child", "tags", models.ManyToManyField("dbops_testapp.parent")),
            state=state,
        )
        == []
    )


def test_a_collation_change_is_refused_and_so_is_a_narrower_type():
    collated = models.CharField(max_length=200, db_collation="C")
    narrower = models.CharField(max_length=100)
    for new_field in (collated, narrower):
        [error] = messages(migrations.AlterField("parent", "name", new_field))
        assert error.id == E104
    assert (
        "collation of name from default to C"
        in messages(migrations.AlterField("parent", "name", collated))[0].msg
    )


@pytest.mark.parametrize(
    "constraint",
    [
        models.UniqueConstraint(
            fields=["parent"], condition=models.Q(note="pending"), name="one_pending"
        ),
        ExclusionConstraint(name="no_overlap", expressions=[("parent", "=")]),
    ],
    ids=["conditional_unique", "exclusion"],
)
def test_constraints_without_a_concurrent_operation_say_what_to_do(constraint):
    [error] = messages(migrations.AddConstraint("child", constraint))
    assert error.id == E102
    assert (
        "AddUniqueConstraintConcurrently" in error.msg
        or "there is no form that does not block" in error.msg
    )


def test_separate_database_and_state_is_checked_on_its_database_side():
    index = models.Index(fields=["note"], name="child_note")
    bad = migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddIndex("child", index)],
        database_operations=[
            migrations.RunSQL("CREATE INDEX child_note ON dbops_testapp_child (note)")
        ],
    )
    good = migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddIndex("child", index)],
        database_operations=[
            migrations.RunSQL("CREATE INDEX CONCURRENTLY child_note ON dbops_testapp_child (note)")
        ],
    )
    assert found(bad) == [(0, E108)]
    assert found(good) == []


@pytest.mark.parametrize(
    "sql",
    [
        "SET lock_timeout = 3000; ALTER TABLE dbops_testapp_child ADD COLUMN memo text",
        "SELECT set_config('lock_timeout', '3s', true); ALTER TABLE dbops_testapp_child DROP COLUMN x",
        [
            "SET LOCAL lock_timeout = '1s'",
            ("ALTER TABLE dbops_testapp_child ADD COLUMN n int", None),
        ],
        "-- CREATE INDEX child_x ON dbops_testapp_child (note)\nSELECT 1",
        "/* ALTER TABLE dbops_testapp_child ADD COLUMN x int */ SELECT 1",
    ],
)
def test_run_sql_that_sets_a_lock_timeout_first_or_only_mentions_ddl_in_comments_passes(sql):
    assert found(migrations.RunSQL(sql)) == []


def test_run_sql_lock_timeout_set_after_the_alter_does_not_count():
    sql = "ALTER TABLE dbops_testapp_child ADD COLUMN memo text; SET lock_timeout = '3s'"
    assert found(migrations.RunSQL(sql)) == [(0, E109)]


# Reviewed markers that are not right -----------------------------------------------------------

BAD_INDEX = migrations.AddIndex("child", models.Index(fields=["note"], name="child_note"))


@pytest.mark.parametrize(
    "reviewed",
    [
        {(0, "dbops.E101"): ""},
        {(0, "dbops.E101"): "   "},
        {(0, "dbops.E101"): None},
        {0: "no rule id"},
        {(0, "dbops.E999"): "unknown rule"},
        [(0, "dbops.E101")],
    ],
    ids=["empty", "blank", "none", "no_rule", "unknown_rule", "not_a_dict"],
)
def test_a_review_without_a_reason_or_a_right_key_is_an_error_and_silences_nothing(reviewed):
    assert found(BAD_INDEX, reviewed=reviewed) == [(0, E101), "dbops.E100"]


def test_a_review_that_matches_nothing_is_a_warning_and_silences_nothing():
    result = messages(BAD_INDEX, reviewed={(1, E101): "the operation moved"})
    assert [m.id for m in result] == [E101, "dbops.W101"]
    assert "matches no finding" in result[1].msg


# Why the rules draw their lines where they do: what PostgreSQL really rewrites ----------------


@pytest.fixture
def scratch():
    """A table with one row, created before the migration under test (so it counts as existing)."""
    state = project_state()
    state.add_model(
        ModelState(
            "dbops_testapp",
            "ScratchSafety",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("code", models.CharField(max_length=10)),
                ("text", models.TextField()),
                ("amount", models.DecimalField(max_digits=10, decimal_places=2)),
                ("count", models.IntegerField()),
            ],
        )
    )
    with connection.schema_editor() as editor:
        editor.create_model(state.apps.get_model("dbops_testapp", "ScratchSafety"))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO dbops_testapp_scratchsafety (code, text, amount, count) VALUES ('a', 'b', 1, 1)"
        )
    return state


def rewrites(operation, state) -> bool:
    """Apply ``operation`` to the scratch table: did PostgreSQL write a new copy of the table?"""

    def filenode():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_relation_filenode('dbops_testapp_scratchsafety')")
            return cursor.fetchone()[0]

    before = filenode()
    new_state = state.clone()
    operation.state_forwards("dbops_testapp", new_state)
    with connection.schema_editor() as editor:
        operation.database_forwards("dbops_testapp", editor, state, new_state)
    return filenode() != before


def alter(name, new_field):
    return migrations.AlterField("scratchsafety", name, new_field)


def add(name, new_field):
    return migrations.AddField("scratchsafety", name, new_field)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "operation, rewritten",
    [
        (alter("code", models.CharField(max_length=20)), False),
        (alter("code", models.TextField()), False),
        (alter("code", models.CharField(max_length=None)), False),
        (alter("text", models.CharField(max_length=None)), False),
        (alter("amount", models.DecimalField(max_digits=12, decimal_places=2)), False),
        (alter("count", models.BigIntegerField()), True),
        (alter("code", models.CharField(max_length=5)), True),
        (alter("amount", models.DecimalField(max_digits=10, decimal_places=3)), True),
        (
            alter(
                "amount", models.DecimalField(max_digits=10, decimal_places=2, db_default=Random())
            ),
            False,
        ),
        (add("seen_at", models.DateTimeField(db_default=Now())), False),
        (add("weight", models.FloatField(db_default=Random())), True),
        (add("token", models.UUIDField(db_default=uuid_v4())), True),
        (add("level", models.IntegerField(db_default=3)), False),
        (add("level", models.IntegerField(default=3)), False),
        (
            add(
                "double",
                models.GeneratedField(
                    expression=models.F("count") * 2,
                    output_field=models.IntegerField(),
                    db_persist=True,
                ),
            ),
            True,
        ),
    ],
    ids=lambda value: value.describe() if hasattr(value, "describe") else str(value),
)
def test_the_check_flags_exactly_the_changes_that_rewrite_the_table(scratch, operation, rewritten):
    flagged = {
        finding.issue.id
        for finding in safety.migration_findings(migration(operation), scratch.clone(), connection)
    } & {E104, E105}
    assert rewrites(operation, scratch) is rewritten
    assert bool(flagged) is rewritten


@pytest.mark.django_db
def test_every_function_the_check_calls_volatile_is_volatile_in_postgresql():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proname, provolatile FROM pg_proc WHERE proname = ANY(%s)",
            [[*safety.VOLATILE_FUNCTIONS, "statement_timestamp"]],
        )
        volatility = dict(cursor.fetchall())
    assert volatility.pop("statement_timestamp") == "s"  # Now(): computed once, no rewrite
    assert {"random", "gen_random_uuid", "clock_timestamp", "nextval"} <= volatility.keys()
    assert set(volatility.values()) == {"v"}


# The check as Django runs it -------------------------------------------------------------------


def test_the_check_looks_at_our_apps_only(settings):
    settings.DEBUG = False  # under override_settings, where SETTINGS_MODULE reads None
    own = safety.own_app_labels()
    assert {"dbops_testapp", "dbops"} <= own
    assert not own & {"auth", "admin", "contenttypes", "sessions"}


@pytest.fixture
def dbops_migrations(tmp_path, monkeypatch, settings):
    """Point dbops at a temporary migrations package: its real 0001 plus the given migrations."""
    package = f"tmp_migrations_{uuid.uuid4().hex}"
    root = tmp_path / package
    root.mkdir()
    (root / "__init__.py").write_text("")
    # Every real migration (other apps' migrations depend on them), then the one under test.
    reals = sorted(Path(dbops.migrations.__file__).parent.glob("0*.py"))
    for real in reals:
        (root / real.name).write_text(real.read_text())

    def install(*operations, reviewed=None):
        written = migrations.Migration("0099_under_test", "dbops")
        written.dependencies = [("dbops", reals[-1].stem)]
        written.operations = list(operations)
        source = MigrationWriter(written).as_string()
        if reviewed is not None:
            source += f"\n    reviewed_unsafe = {reviewed!r}\n"
        (root / "0099_under_test.py").write_text(source)
        forget()
        # The project's baseline (dbops' real 0003) still leaves the older real ones alone.
        settings.MIGRATION_MODULES = {"dbops": package}

    def forget():
        importlib.invalidate_caches()
        for name in [name for name in sys.modules if name.startswith(package)]:
            del sys.modules[name]

    monkeypatch.syspath_prepend(str(tmp_path))
    yield install
    forget()


BACKFILL_INDEX = migrations.AddIndex(
    "backfillrun", models.Index(fields=["target"], name="backfillrun_target_idx")
)


def test_manage_py_check_refuses_a_bad_migration_until_it_is_reviewed(dbops_migrations):
    dbops_migrations(BACKFILL_INDEX)
    with pytest.raises(SystemCheckError, match=r"dbops\.E101.*dbops\.0099_under_test"):
        call_command("check")
    dbops_migrations(BACKFILL_INDEX, reviewed={(0, "dbops.E101"): "one row per backfill run"})
    call_command("check")


@pytest.mark.django_db
def test_migrate_refuses_a_bad_migration_and_applies_nothing(dbops_migrations):
    dbops_migrations(BACKFILL_INDEX)
    with pytest.raises(SystemCheckError, match=r"dbops\.E101"):
        call_command("migrate", "dbops", skip_checks=False, verbosity=0)
    assert index_state(connection, "backfillrun_target_idx") is None
    applied = MigrationRecorder(connection).applied_migrations()
    assert ("dbops", "0099_under_test") not in applied


# Rules for a rolling deploy: the stages, and what the pending stage needs ----------------------


def test_a_delete_stage_before_its_pending_stage_is_refused():
    assert found(SafeRemoveField("parent", "description", stage="delete")) == [(0, E110)]
    assert found(SafeDeleteModel("Child", stage="delete")) == [(0, E111)]


def test_a_delete_stage_in_the_migration_of_its_pending_stage_is_refused():
    assert found(
        SafeRemoveField("parent", "description", stage="pending"),
        SafeRemoveField("parent", "description", stage="delete"),
    ) == [(1, E110)]
    assert found(
        SafeDeleteModel("Child", stage="pending"), SafeDeleteModel("Child", stage="delete")
    ) == [(1, E111)]


def test_a_delete_stage_after_the_pending_stage_passes():
    state = project_state()
    SafeRemoveField("parent", "description", stage="pending").state_forwards("dbops_testapp", state)
    SafeDeleteModel("Child", stage="pending").state_forwards("dbops_testapp", state)
    assert (
        found(
            SafeRemoveField("parent", "description", stage="delete"),
            SafeDeleteModel("Child", stage="delete"),
            state=state,
        )
        == []
    )


def test_the_pending_stage_of_a_not_null_column_without_a_database_default_is_refused():
    [error] = messages(SafeRemoveField("parent", "region", stage="pending"))
    assert error.id == E115
    assert "every INSERT of the new code fails" in error.msg
    assert "null=True" in error.msg and "db_default" in error.msg


def test_each_message_names_the_safe_alternative():
    cases = {
        E110: (migrations.RemoveField("parent", "description"), "SafeRemoveField"),
        E111: (migrations.DeleteModel("Child"), "SafeDeleteModel"),
        E112: (migrations.RemoveField("parent", "owner"), "db_constraint=False"),
        E113: (migrations.RenameField("parent", "name", "title"), "db_column='name'"),
        E114: (migrations.RenameModel("Child", "Charge"), "db_table='dbops_testapp_child'"),
        E115: (
            migrations.AddField("child", "memo", models.CharField(max_length=9, default="-")),
            "db_default='-'",
        ),
        E117: (migrations.RunSQL("DELETE FROM dbops_testapp_child"), "backfill_column"),
    }
    for rule, (operation, alternative) in cases.items():
        [error] = [m for m in messages(operation) if m.id == rule]
        assert f"Instead: {alternative}" in error.msg or alternative in error.msg, error.msg


def test_long_names_are_refused_on_new_tables_too():
    create = migrations.CreateModel(
        "Scratch",
        [("id", models.BigAutoField(primary_key=True)), ("é" * 32, models.IntegerField())],
    )
    # 32 characters, 64 bytes: PostgreSQL counts bytes.
    assert found(create) == [(0, E116)]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO dbops_testapp_child (note) VALUES ('new') ON CONFLICT DO UPDATE SET note = 'x'",
        "SELECT * FROM dbops_testapp_child FOR UPDATE",
        "CREATE TABLE side (id int); UPDATE side SET id = 1",
        # A trigger function's body runs when the trigger fires, not in the migration.
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM dbops_testapp_child; RETURN NULL; END $$",
        "CREATE FUNCTION g() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN "
        "UPDATE dbops_testapp_child SET note = 'x'; RETURN NULL; END $body$",
    ],
)
def test_sql_that_changes_no_existing_rows_in_bulk_is_not_a_data_change(sql):
    assert E117 not in [rule for _index, rule in found(migrations.RunSQL(sql))]


def test_a_data_change_after_a_function_body_is_still_found():
    sql = (
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; "
        "UPDATE dbops_testapp_child SET note = 'x'"
    )
    assert E117 in [rule for _index, rule in found(migrations.RunSQL(sql))]


# The baseline: migrations written before the check are not judged again --------------------


def test_a_baseline_leaves_its_migration_and_older_ones_alone_and_judges_newer_ones(
    dbops_migrations, settings
):
    dbops_migrations(BACKFILL_INDEX)
    with pytest.raises(SystemCheckError, match=r"dbops\.E101"):
        call_command("check")
    settings.DBOPS = {**settings.DBOPS, "MIGRATION_SAFETY_BASELINE": {"dbops": "0099_under_test"}}
    call_command("check")
    settings.DBOPS = {
        **settings.DBOPS,
        "MIGRATION_SAFETY_BASELINE": {"dbops": "0004_backfill_control"},
    }
    with pytest.raises(SystemCheckError, match=r"dbops\.E101"):
        call_command("check")


def test_a_baseline_naming_no_migration_is_an_error(settings):
    baseline = {**settings.DBOPS["MIGRATION_SAFETY_BASELINE"], "dbops_testapp": "0099_nothing"}
    settings.DBOPS = {**settings.DBOPS, "MIGRATION_SAFETY_BASELINE": baseline}
    [error] = safety.check_migration_safety()
    assert error.id == "dbops.E003"
    assert "dbops_testapp.0099_nothing" in error.msg
