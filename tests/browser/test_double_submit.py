"""Back and Send again, in a real browser: the one-time key of a form survives the way back."""

from selenium.webdriver.support.ui import Select

from accounts.models import Transfer
from orders.models import Order, Product


def test_back_then_send_again_makes_one_transfer(browser, demo):
    main, savings = demo.accounts
    before = Transfer.objects.count()
    browser.login(demo.username, demo.password)
    browser.get("/accounts/transfers/new/")

    def fill():
        Select(browser.find("#id_source")).select_by_value(str(main.pk))
        Select(browser.find("#id_target")).select_by_value(str(savings.pk))
        amount = browser.find("#id_amount")
        amount.clear()
        amount.send_keys("12.34")

    fill()
    browser.submit(browser.find("form button.primary"))
    sent = Transfer.objects.order_by("-pk").first()
    assert Transfer.objects.count() == before + 1

    browser.back()
    assert f"This form was sent already: transfer #{sent.pk}" in browser.text("[data-sent]")
    fill()  # as Chromium refills them, or as a person types them again
    browser.submit(browser.find("form button.primary"))
    assert browser.driver.current_url.endswith("/accounts/transfers/")
    assert f"Transfer #{sent.pk}" in browser.text(".messages")
    assert "Nothing was sent again." in browser.text(".messages")
    assert Transfer.objects.count() == before + 1


def test_back_then_place_again_makes_one_order(browser, demo):
    product = Product.objects.order_by("pk").first()
    before = Order.objects.count()
    browser.login(demo.username, demo.password)
    browser.get("/orders/new/")

    def fill():
        Select(browser.find("[data-line] select")).select_by_value(str(product.pk))
        quantity = browser.find("[data-line] input")
        quantity.clear()
        quantity.send_keys("1")

    fill()
    browser.submit(browser.find("form button.primary"))
    placed = Order.objects.order_by("-pk").first()
    assert Order.objects.count() == before + 1

    browser.back()
    assert f"This form was sent already: order #{placed.pk}" in browser.text("[data-sent]")
    fill()
    browser.submit(browser.find("form button.primary"))
    assert browser.driver.current_url.endswith(f"/orders/{placed.pk}/")
    assert "Nothing was ordered again." in browser.text(".messages")
    assert Order.objects.count() == before + 1
