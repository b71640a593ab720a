"""Screenshots of the main pages at 1280 and 400 px wide, for docs/screenshots/.

Not part of the suite (the name does not start with test_); run it with ``make screenshots``.
"""

from pathlib import Path

from orders.models import Order

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"
WIDTHS = {1280: 860, 400: 860}


def test_docs_screenshots(browser, demo):
    browser.login(demo.username, demo.password)
    order = Order.objects.order_by("-pk").first()
    pages = {
        "home": "/",
        "patterns": "/patterns/",
        "accounts": "/accounts/",
        "transfers": "/accounts/transfers/",
        "orders": "/orders/",
        "order": f"/orders/{order.pk}/",
        "order-new": "/orders/new/",
        "n-plus-one": "/patterns/n-plus-one/",
        "report": "/orders/reports/top-customers/",
        "health": "/health/",
        "admin-orders": "/admin/orders/order/",
    }
    DOCS.mkdir(parents=True, exist_ok=True)
    for width, height in WIDTHS.items():
        browser.resize(width, height)
        for name, path in pages.items():
            browser.get(path)
            browser.screenshot(DOCS / f"{name}-{width}.png")
