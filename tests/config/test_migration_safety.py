"""The migration safety check on this project: its own migrations pass, its apps are the ones
judged, and its baseline (config/settings/base.py) leaves the toolkit's older migrations alone.
The check itself: tests/dbops/test_migration_safety.py."""

from django.core.management import call_command

from dbops import migration_safety as safety

E115 = "dbops.E115"


def test_manage_py_check_passes_on_the_project():
    call_command("check")
    assert safety.check_migration_safety() == []


def test_the_check_looks_at_our_apps_only(settings):
    settings.DEBUG = False  # under override_settings, where SETTINGS_MODULE reads None
    own = safety.own_app_labels()
    assert {"accounts", "orders", "dbops"} <= own
    assert not own & {"auth", "admin", "contenttypes", "sessions"}


def test_the_projects_baseline_is_what_leaves_dbops_older_migrations_alone(settings):
    assert safety.check_migration_safety() == []
    settings.DBOPS = {**settings.DBOPS, "MIGRATION_SAFETY_BASELINE": {}}
    judged = safety.check_migration_safety()
    assert {m.id for m in judged} == {E115}
    assert {m.msg.split(",")[0] for m in judged} == {
        "dbops.0002_backfillrun_lease",
        "dbops.0003_backfillrun_replica_pauses",
    }
