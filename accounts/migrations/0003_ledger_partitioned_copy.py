from django.db import migrations

from dbops.partitioning.operations import CreatePartitionedCopy, SyncToPartitionedCopy

COPY = "accounts_ledgerentry_partitioned"

# LedgerKey is written by these triggers, in the transaction that writes the entry, whoever
# writes it: a second entry with a key its account already used fails on LedgerKey's primary key.
# On the partitioned copy, so the history copy and the trigger of 0003 fill it as they fill the
# copy; after the swap (0005) they are the ledger's own. WHEN clauses: an entry without a key
# (every transfer's) costs no function call.
KEY_TRIGGERS = f"""
CREATE OR REPLACE FUNCTION accounts_ledgerkey_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Not TRUNCATE: Django's flush truncates both tables in one statement, and a TRUNCATE of
        -- one of them from inside it is refused ("being used by active queries").
        DELETE FROM accounts_ledgerkey;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.idempotency_key IS NOT NULL THEN
        DELETE FROM accounts_ledgerkey
         WHERE account_id = OLD.account_id AND idempotency_key = OLD.idempotency_key
           AND entry_id = OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.idempotency_key IS NOT NULL THEN
        INSERT INTO accounts_ledgerkey (account_id, idempotency_key, entry_id, entry_created_at)
        VALUES (NEW.account_id, NEW.idempotency_key, NEW.id, NEW.created_at);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER ledgerkey_insert AFTER INSERT ON {COPY}
    FOR EACH ROW WHEN (NEW.idempotency_key IS NOT NULL) EXECUTE FUNCTION accounts_ledgerkey_keep();
CREATE OR REPLACE TRIGGER ledgerkey_update AFTER UPDATE OF id, account_id, idempotency_key, created_at
    ON {COPY} FOR EACH ROW WHEN (OLD.idempotency_key IS NOT NULL OR NEW.idempotency_key IS NOT NULL)
    EXECUTE FUNCTION accounts_ledgerkey_keep();
CREATE OR REPLACE TRIGGER ledgerkey_delete AFTER DELETE ON {COPY}
    FOR EACH ROW WHEN (OLD.idempotency_key IS NOT NULL) EXECUTE FUNCTION accounts_ledgerkey_keep();
CREATE OR REPLACE TRIGGER ledgerkey_truncate AFTER TRUNCATE ON {COPY}
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_ledgerkey_keep();
"""  # noqa: S608 (no input: fixed names)

KEY_TRIGGERS_DROP = f"""
DROP TRIGGER IF EXISTS ledgerkey_insert ON {COPY};
DROP TRIGGER IF EXISTS ledgerkey_update ON {COPY};
DROP TRIGGER IF EXISTS ledgerkey_delete ON {COPY};
DROP TRIGGER IF EXISTS ledgerkey_truncate ON {COPY};
DROP FUNCTION IF EXISTS accounts_ledgerkey_keep();
TRUNCATE accounts_ledgerkey;
"""


class Migration(migrations.Migration):
    """Partitioning the ledger, 1 of 4: its partitioned copy, kept in step by a trigger.

    atomic = False: each step commits on its own, in short transactions under lock_timeout
    (dbops.partitioning). Safe to run again after a failure: each step does what is left.
    README: "Partitioning the ledger".
    """

    atomic = False

    dependencies = [
        ("accounts", "0002_ledgerkey"),
    ]

    operations = [
        CreatePartitionedCopy(
            "accounts_ledgerentry",
            "created_at",
            interval="month",
            ahead=3,
            uniques_elsewhere={
                "ledger_idempotency_key_per_account": (
                    "accounts_ledgerkey (LedgerKey), written by a trigger on the ledger"
                ),
            },
        ),
        migrations.RunSQL(KEY_TRIGGERS, reverse_sql=KEY_TRIGGERS_DROP),
        SyncToPartitionedCopy("accounts_ledgerentry"),
    ]
