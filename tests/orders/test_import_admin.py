"""The products import in the admin: staff with the product permissions only, CSRF, a size limit,
the command's report with line numbers, and no server error whatever the file."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from orders.models import Product
from tests.factories import user_create

pytestmark = pytest.mark.django_db

URL = "/admin/orders/product/import/"
GOOD = b"sku,name,price,stock\nAD-1,Lamp,19.90,4\nAD-2,Desk,149.00,2\n"


@pytest.fixture
def staff():
    client = Client(raise_request_exception=False)
    client.force_login(user_create("importer", is_staff=True, is_superuser=True))
    return client


def upload(client, content: bytes, *, dry_run=False, name="products.csv"):
    data = {"file": SimpleUploadedFile(name, content, content_type="text/csv")}
    if dry_run:
        data["dry_run"] = "on"
    return client.post(URL, data)


def test_staff_import_a_file_and_the_same_file_again_changes_nothing(staff):
    response = upload(staff, GOOD)
    assert response.status_code == 200
    assert "2 inserted, 0 updated, 0 unchanged, 0 rejected" in response.text
    assert sorted(Product.objects.values_list("sku", "version")) == [("AD-1", 1), ("AD-2", 1)]
    response = upload(staff, GOOD)
    assert "0 inserted, 0 updated, 2 unchanged" in response.text
    assert sorted(Product.objects.values_list("sku", "version")) == [("AD-1", 1), ("AD-2", 1)]


def test_the_page_and_the_changelist_link(staff):
    assert staff.get(URL).status_code == 200
    assert URL in staff.get("/admin/orders/product/").text


def test_rejected_lines_are_listed_with_their_line_numbers_and_the_good_rows_written(staff):
    response = upload(staff, GOOD + b"AD-3,Chair,12;50,1\nAD-1,Lamp again,1.00,1\n")
    assert response.status_code == 200
    assert "2 inserted, 0 updated, 0 unchanged, 2 rejected" in response.text
    assert "<td>4</td><td>price &#x27;12;50&#x27; is not a plain amount" in response.text
    assert "<td>5</td><td>SKU &#x27;AD-1&#x27; appears again (first on line 2)" in response.text
    assert Product.objects.count() == 2


def test_check_only_writes_nothing(staff):
    response = upload(staff, GOOD, dry_run=True)
    assert "2 would be inserted" in response.text and "nothing was written" in response.text
    assert Product.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The submitted file is empty."),
        (b"\xff\xfe\x00\x00garbage", "line 1: not UTF-8"),
        ("sku,name,price,stock\nA-1,Café,1,1\n".encode("latin-1"), "line 2: not UTF-8"),
        (b"sku,name,colour\nA,B,red\n", "line 1: unknown column &#x27;colour&#x27;"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_imported_is_an_error_on_the_page_never_a_server_error(
    staff, content, message
):
    response = upload(staff, content)
    assert response.status_code == 400
    assert message in response.text
    assert Product.objects.count() == 0


def test_a_file_over_the_limit_is_refused_before_it_is_read(staff, monkeypatch):
    monkeypatch.setattr("orders.admin.UPLOAD_MAX_BYTES", 50)
    response = upload(staff, GOOD)
    assert response.status_code == 400
    assert f"The file is {len(GOOD)}\xa0bytes; at most 50\xa0bytes here." in response.text
    assert "python manage.py import_products FILE.csv --copy" in response.text
    assert Product.objects.count() == 0


def test_a_post_with_no_file_is_a_form_error(staff):
    response = staff.post(URL, {"dry_run": "on"})
    assert response.status_code == 400 and "This field is required." in response.text


def test_people_who_are_not_staff_are_sent_to_the_login_page_and_nothing_is_written():
    client = Client()
    assert client.post(URL, {"file": SimpleUploadedFile("p.csv", GOOD)}).status_code == 302
    client.force_login(user_create("customer"))
    response = client.post(URL, {"file": SimpleUploadedFile("p.csv", GOOD)})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Product.objects.count() == 0


def test_staff_without_the_product_permissions_are_refused():
    user = user_create("viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_product"))
    client = Client()
    client.force_login(user)
    assert client.post(URL, {"file": SimpleUploadedFile("p.csv", GOOD)}).status_code == 403
    assert Product.objects.count() == 0


def test_a_post_without_the_csrf_token_is_refused():
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_create("root", is_staff=True, is_superuser=True))
    assert client.post(URL, {"file": SimpleUploadedFile("p.csv", GOOD)}).status_code == 403
    assert Product.objects.count() == 0
    # With the token from the form, the same post goes through.
    page = client.get(URL)
    token = page.cookies["csrftoken"].value
    response = client.post(
        URL, {"file": SimpleUploadedFile("p.csv", GOOD), "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 200 and Product.objects.count() == 2
