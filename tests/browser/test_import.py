"""The products import in the admin, in a real browser: the link, the upload, the report."""

import os

from orders.models import Product


def test_staff_upload_a_csv_from_the_product_list_and_see_bad_lines_by_number(
    browser, demo, tmp_path
):
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "sku,name,price,stock\nBR-1,Browser lamp,19.90,4\nBR-2,Browser desk,1e3,2\n",
        encoding="utf-8",
    )
    browser.login(demo.username, demo.password)
    browser.get("/admin/orders/product/")
    browser.submit(browser.find(".object-tools a[href$='/import/']"))
    browser.find("#id_file").send_keys(str(path))
    browser.submit(browser.find("#product-import-form input[type=submit]"))

    assert "1 inserted, 0 updated, 0 unchanged, 1 rejected" in browser.text(".messagelist")
    rows = [row.text for row in browser.find_all("#import-rejects tbody tr")]
    assert rows == ["3 price '1e3' is not a plain amount such as 12.50"]
    assert Product.objects.filter(sku="BR-1").exists()
    if os.environ.get("IMPORT_SCREENSHOT"):
        browser.screenshot(tmp_path / "import.png")
