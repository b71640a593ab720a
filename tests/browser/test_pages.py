"""Every page and admin changelist in a real browser: it loads, nothing fails, and the footer's
query count is the X-DB-Query-Count header."""

from django.contrib import admin
from django.urls import reverse

from orders.models import Customer, Order


def test_every_page_for_staff_loads_cleanly_with_the_footer_count_of_the_header(browser, demo):
    browser.login(demo.username, demo.password)
    order = Order.objects.order_by("-pk").first()
    customer = Customer.objects.get(user=demo.user)
    pages = [
        "/",
        "/patterns/",
        "/patterns/n-plus-one/",
        "/patterns/edit-conflict/",
        "/patterns/batch/",
        "/accounts/",
        "/accounts/transfers/new/",
        "/accounts/transfers/",
        f"/accounts/{demo.accounts[0].pk}/edit/",
        "/orders/",
        "/orders/new/",
        f"/orders/{order.pk}/",
        f"/orders/customers/{customer.pk}/",
        "/orders/reports/top-customers/",
        "/orders/reports/top-customers/?region=east",
        "/health/",
        "/admin/",
    ]
    for path in pages:
        browser.get(path)
    for model in admin.site._registry:
        opts = model._meta
        browser.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    browser.get(reverse("admin:orders_order_change", args=[order.pk]))
    # Not HTML: no footer, but no error either, with or without the trailing slash.
    for path in ("/health/live", "/health/ready", "/health/ready/"):
        browser.get(path, footer=False)


def test_the_footer_names_the_patterns_of_the_page_and_their_code(browser, demo):
    browser.login(demo.username, demo.password)
    footer = browser.get("/accounts/transfers/").text(".site-footer")
    assert "Keyset pagination" in footer and "accounts/selectors.py transfer_list" in footer
    browser.submit(browser.find(".site-footer .page-patterns a"))
    assert browser.driver.current_url.endswith("/patterns/#keyset-pagination")


def test_navigation_offers_only_what_the_user_may_open(browser, demo):
    browser.login(demo.person, demo.person_password)
    nav = browser.text(".site-header nav")
    assert "Accounts" in nav and "Transfers" in nav
    for hidden in ("Orders", "New order", "Reports", "Admin", "Health"):
        assert hidden not in nav.split("\n") and hidden not in nav.replace("New transfer", "")
    page = browser.get("/orders/").text("main")
    assert "Your login has no customer profile" in page

    browser.login(demo.username, demo.password)
    nav = browser.text(".site-header nav")
    for shown in ("Orders", "New order", "Reports", "Health", "Admin"):
        assert shown in nav


def test_logging_out_says_so(browser, demo):
    browser.login(demo.username, demo.password)
    browser.logout()
    assert browser.driver.current_url.endswith("/login/")
    assert "You are logged out." in browser.text(".messages")


def test_nothing_is_wider_than_a_400_px_screen(browser, demo):
    browser.login(demo.username, demo.password)
    browser.resize(400)
    order = Order.objects.order_by("-pk").first()
    for path in (
        "/",
        "/accounts/",
        "/accounts/transfers/",
        "/orders/",
        "/orders/new/",
        f"/orders/{order.pk}/",
        "/orders/reports/top-customers/",
        "/orders/products/",
        "/patterns/",
    ):
        browser.get(path)
        width = browser.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"{path} is {width} px wide at 400 px"
        header = browser.find(".site-header")
        assert header.size["width"] <= 400


def test_the_order_page_and_the_report_fit_a_400_px_screen_money_included(browser, demo):
    """The order page hid its "Total" label and clipped the line totals; the report cut its money
    column off. Their tables fit the screen now, every money figure in view."""
    browser.login(demo.username, demo.password)
    browser.resize(400)
    order = Order.objects.order_by("-pk").first()
    for path in (f"/orders/{order.pk}/", "/orders/reports/top-customers/"):
        browser.get(path)
        for box in browser.find_all(".table-scroll"):
            overflow = browser.driver.execute_script(
                "return arguments[0].scrollWidth - arguments[0].clientWidth", box
            )
            assert overflow <= 0, f"{path}: a table is {overflow} px wider than its box"
    browser.get(f"/orders/{order.pk}/")
    total = browser.find("tfoot")
    assert total.text.lower() == f"total {order.total:,.2f} eur"  # the label, then the sum
