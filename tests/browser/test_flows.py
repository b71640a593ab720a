"""What a person does, in a real browser: transfer, edit conflict, history paging, an order."""

from selenium.webdriver.support.ui import Select

from accounts.models import Transfer
from orders.models import Order, Product


def test_a_transfer_through_the_form_moves_the_money_and_says_how_much(browser, demo):
    main, savings = demo.accounts
    before = Transfer.objects.count()
    browser.login(demo.username, demo.password)
    browser.get("/accounts/transfers/new/")
    Select(browser.find("#id_source")).select_by_value(str(main.pk))
    Select(browser.find("#id_target")).select_by_value(str(savings.pk))
    browser.find("#id_amount").send_keys("1234.5")
    browser.find("#id_memo").send_keys("from the browser")
    browser.submit(browser.find("form button.primary"))

    assert browser.driver.current_url.endswith("/accounts/transfers/")
    assert "1,234.50 EUR sent from" in browser.text(".messages")  # .text turns NBSP to space
    assert Transfer.objects.count() == before + 1
    newest = browser.find("table.transfers tbody tr").text
    assert "from the browser" in newest and "1,234.50 EUR" in newest


def test_an_edit_conflict_in_two_browsers_keeps_the_first_save(browser, second_browser, demo):
    account = demo.accounts[0]
    for b in (browser, second_browser):
        b.login(demo.username, demo.password)
        b.get(f"/accounts/{account.pk}/edit/")
    for b, name in ((browser, "Household"), (second_browser, "Holidays")):
        field = b.find("#id_name")
        field.clear()
        field.send_keys(name)
    browser.submit(browser.find("form button.primary"))
    assert "saved" in browser.text(".messages")

    second_browser.submit(second_browser.find("form button.primary"), status=409)
    page = second_browser.text("main")
    assert "changed while you edited it" in page
    assert "Household" in page and "Holidays" in page
    account.refresh_from_db()
    assert account.name == "Household"


def test_the_conflict_demo_provokes_a_409(browser, demo):
    account = demo.accounts[1]
    browser.login(demo.username, demo.password)
    browser.get("/patterns/edit-conflict/")
    Select(browser.find("#account")).select_by_value(str(account.pk))
    browser.submit(browser.find("form button.primary"))
    assert "someone else saved version 2" in browser.text("main")
    browser.submit(browser.find("form button.primary"), status=409)
    account.refresh_from_db()
    assert account.version == 2 and account.name.endswith("(renamed elsewhere)")


def test_history_pages_older_and_newer_through_the_keyset_links(browser, demo):
    browser.login(demo.username, demo.password)
    browser.get("/accounts/transfers/")

    def ids():
        return [row.text.split()[0] for row in browser.find_all("table.transfers tbody tr")]

    first = ids()
    assert len(first) == 25 and not browser.find_all(".pager a[rel=prev]")
    pages = [first]
    while links := browser.find_all(".pager a[rel=next]"):
        browser.submit(links[0])
        pages.append(ids())
    seen = [pk for page in pages for pk in page]
    assert len(seen) == len(set(seen)) >= 30
    assert [int(pk) for pk in seen] == sorted((int(pk) for pk in seen), reverse=True)
    # And back up again, one page at a time, to the newest.
    for expected in reversed(pages[:-1]):
        browser.submit(browser.find(".pager a[rel=prev]"))
        assert ids() == expected
    assert not browser.find_all(".pager a[rel=prev]")


def test_an_order_with_an_added_line_and_a_declined_card_falls_back_to_the_wallet(browser, demo):
    first, second = Product.objects.order_by("pk")[:2]
    stock = {p.pk: p.stock for p in (first, second)}
    browser.login(demo.username, demo.password)
    browser.get("/orders/new/")
    assert len(browser.find_all("[data-line]")) == 1
    browser.find("[data-add]").click()  # in the page: no request
    browser.find("[data-add]").click()
    assert len(browser.find_all("[data-line]")) == 3
    browser.find_all("[data-line] [data-remove]")[2].click()
    lines = browser.find_all("[data-line]")
    assert len(lines) == 2
    for line, product, quantity in ((lines[0], first, "2"), (lines[1], second, "1")):
        Select(line.find_element("css selector", "select")).select_by_value(str(product.pk))
        line.find_element("css selector", "input").send_keys(quantity)
    browser.find("input[name=decline][value=card]").click()
    browser.submit(browser.find("form button.primary"))

    order = Order.objects.order_by("-pk").first()
    assert browser.driver.current_url.endswith(f"/orders/{order.pk}/")
    message = browser.text(".messages")
    assert "card declined" in message and "paid with wallet" in message
    assert list(order.payments.values_list("method", flat=True)) == ["wallet"]
    assert dict(order.items.values_list("product_id", "quantity")) == {first.pk: 2, second.pk: 1}
    assert order.total == first.price * 2 + second.price
    for product in (first, second):
        product.refresh_from_db()
    assert (first.stock, second.stock) == (stock[first.pk] - 2, stock[second.pk] - 1)
    assert f"{order.total:,.2f}" in browser.text("tfoot")


def test_an_order_with_every_method_declined_leaves_nothing(browser, demo):
    product = Product.objects.order_by("pk").first()
    orders = Order.objects.count()
    browser.login(demo.username, demo.password)
    browser.get("/orders/new/")
    Select(browser.find("[data-line] select")).select_by_value(str(product.pk))
    browser.find("[data-line] input").send_keys("1")
    for method in ("card", "wallet"):
        browser.find(f"input[name=decline][value={method}]").click()
    browser.submit(browser.find("form button.primary"), status=400)
    assert "Payment failed" in browser.text(".errorlist")
    assert Order.objects.count() == orders
    assert Product.objects.get(pk=product.pk).stock == product.stock
