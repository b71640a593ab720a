"""Screenshots of the main pages at 1280 and 400 px wide, for docs/screenshots/.

Not part of the suite (the name does not start with test_); run it with ``make screenshots``.
"""

from pathlib import Path

from accounts.services import transfer_create
from orders.models import Order, Product
from orders.services import order_place, product_update
from tests.browser.conftest import on_server
from tests.helpers import database_proxy, runserver

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"
WIDTHS = {1280: 860, 400: 860}
SENT_KEY = "0123456789abcdef0123456789abcdef"


def test_docs_screenshots(browser, demo):
    browser.login(demo.username, demo.password)
    order = Order.objects.order_by("-pk").first()
    # A transfer and an order from a form rendering: Back to it shows what it did.
    main, savings = demo.accounts
    transfer_create(
        source_id=main.pk, target_id=savings.pk, amount="12.34", idempotency_key=SENT_KEY
    )
    products = Product.objects.order_by("pk")[:2]
    order_place(
        customer_id=demo.user.customer.pk,
        lines=[(p.pk, 1) for p in products],
        idempotency_key=SENT_KEY,
    )
    pages = {
        "home": "/",
        "patterns": "/patterns/",
        "accounts": "/accounts/",
        "transfers": "/accounts/transfers/",
        "transfer-sent-already": f"/accounts/transfers/new/?key={SENT_KEY}",
        "orders": "/orders/",
        "order": f"/orders/{order.pk}/",
        "order-new": "/orders/new/",
        "order-sent-already": f"/orders/new/?key={SENT_KEY}",
        "products": "/orders/products/",
        "n-plus-one": "/patterns/n-plus-one/",
        "report": "/orders/reports/top-customers/",
        "health": "/health/",
        "bad-request": ("/orders/reports/top-customers/?region=Atlantis", 400),
        "admin-orders": "/admin/orders/order/",
        "admin-order": f"/admin/orders/order/{order.pk}/change/",
    }
    DOCS.mkdir(parents=True, exist_ok=True)
    for width, height in WIDTHS.items():
        browser.resize(width, height)
        for name, path in pages.items():
            path, status = path if isinstance(path, tuple) else (path, 200)
            browser.get(path, status=status)
            browser.screenshot(DOCS / f"{name}-{width}.png")
        admin_conflict(browser, width)
        login_warning(browser, demo, width)
        browser.login(demo.person, demo.person_password)
        browser.get("/patterns/n-plus-one/")
        browser.screenshot(DOCS / f"n-plus-one-transfers-{width}.png")
        browser.login(demo.username, demo.password)
    database_unavailable(browser, demo)


def admin_conflict(browser, width):
    """The product admin after someone else saved first: both versions of each field."""
    product = Product.objects.order_by("pk").first()
    browser.get(f"/admin/orders/product/{product.pk}/change/")
    name = browser.find("#id_name")
    name.clear()
    name.send_keys(f"{product.name} (mine)")
    product_update(
        product_id=product.pk, expected_version=product.version, name=f"{product.name} (theirs)"
    )
    browser.submit(browser.find("input[name=_save]"))
    browser.driver.execute_script("window.scrollTo(0, 0)")
    browser.screenshot(DOCS / f"admin-conflict-{width}.png")
    product_update(product_id=product.pk, expected_version=product.version + 1, name=product.name)


def login_warning(browser, demo, width):
    browser.forget()
    browser.get("/login/")
    browser.find("#id_username").send_keys(demo.person)
    browser.find("#id_password").send_keys("not the password")
    browser.submit(browser.find("form button[type=submit]"))
    browser.screenshot(DOCS / f"login-warning-{width}.png")
    from axes.models import AccessAttempt

    AccessAttempt.objects.all().delete()


def database_unavailable(browser, demo):
    """``make stopdb`` under ``make run`` while logged in: the plain 503 page."""
    with (
        database_proxy() as proxy,
        runserver("config.settings.local", DATABASE_URL=proxy.url) as base,
    ):
        dev = on_server(browser, base, demo.user)
        proxy.cut()
        for width, height in WIDTHS.items():
            browser.resize(width, height)
            dev.get("/accounts/", status=503, footer=False)
            dev.screenshot(DOCS / f"database-unavailable-{width}.png")
