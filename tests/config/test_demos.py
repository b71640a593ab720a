"""The on-demand demos: each provokes what its pattern is for, with the real services."""

from decimal import Decimal

import pytest

from accounts.models import Account, Transfer
from orders.demo import customers_seed, orders_seed, products_seed
from orders.models import Order, OrderItem
from tests.factories import account_create, customer_create, user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = user_create("boss", is_staff=True)
    customer_create(user=user)
    client.force_login(user)
    return client


def test_n_plus_one_side_by_side_counts_each_way(staff):
    products_seed(20)
    customers_seed(10)
    orders_seed(10)
    max_first = Order.objects.order_by("-pk").first().pk
    few = staff.get("/patterns/n-plus-one/").context
    orders_seed(40)
    many = staff.get("/patterns/n-plus-one/").context
    assert few["selector"]["queries"] == many["selector"]["queries"] == 2
    # One for the orders, then per order its customer and its items, per item its product.
    items = OrderItem.objects.filter(order__in=Order.objects.order_by("-pk")[:20]).count()
    assert many["naive"]["queries"] == 1 + 2 * 20 + items
    assert (
        few["naive"]["queries"]
        == 1 + 2 * 10 + OrderItem.objects.filter(order__pk__lte=max_first).count()
    )
    assert many["selector"]["html"] == many["naive"]["html"]  # the same page, either way


def test_the_selectors_code_panel_shows_the_query_it_builds(staff):
    products_seed(5)
    customers_seed(5)
    orders_seed(10)
    code = staff.get("/patterns/n-plus-one/").context["selector"]["code"]
    for made_of in ('select_related("customer")', "Prefetch(", "Count(", "def order_list("):
        assert made_of in code, made_of


def test_a_login_without_a_customer_profile_sees_the_demo_on_its_own_transfers(client):
    """Not shut out ("no customer profile"): the same lesson on what it may see, its transfers."""
    person, stranger = user_create(), user_create()
    main, savings = account_create(owner=person, balance="500"), account_create(owner=person)
    theirs = account_create(owner=stranger, balance="500")
    from accounts.services import transfer_create

    for n in range(12):
        source, target = ((main, savings), (main, theirs), (theirs, main))[n % 3]
        transfer_create(source_id=source.pk, target_id=target.pk, amount="1")
    transfer_create(source_id=theirs.pk, target_id=account_create(owner=stranger).pk, amount="1")
    client.force_login(person)
    response = client.get("/patterns/n-plus-one/")
    assert response.status_code == 200 and response.context["kind"] == "transfers"
    demo = response.context
    assert demo["selector"]["queries"] == 1
    assert demo["naive"]["queries"] == 1 + 2 * 12  # its own 12, never the stranger's
    assert demo["selector"]["html"] == demo["naive"]["html"]
    assert b"no customer profile" not in response.content


def test_the_conflict_demo_saves_first_as_someone_else_then_hands_over_the_stale_form(client):
    owner = user_create()
    account = account_create(owner=owner, name="Main")
    client.force_login(owner)
    response = client.post("/patterns/edit-conflict/", {"account": account.pk})
    assert response.status_code == 200
    assert response.context["form"].initial["version"] == 1
    account.refresh_from_db()
    assert (account.version, account.name) == (2, "Main (renamed elsewhere)")
    stale = client.post(f"/accounts/{account.pk}/edit/", {"name": "Mine", "version": 1})
    assert stale.status_code == 409
    account.refresh_from_db()
    assert account.name == "Main (renamed elsewhere)"


def test_the_conflict_demo_refuses_someone_elses_account(client):
    theirs = account_create(owner=user_create(), name="Theirs")
    client.force_login(user_create())
    response = client.post("/patterns/edit-conflict/", {"account": theirs.pk})
    assert response.status_code == 302
    theirs.refresh_from_db()
    assert theirs.version == 1


def test_the_batch_demo_commits_the_good_items_and_reports_the_bad_one(client):
    owner = user_create()
    a = account_create(owner=owner, balance="10.00")
    b = account_create(owner=owner, balance="5.00")
    client.force_login(owner)
    rows = client.post("/patterns/batch/").context["result"]
    assert [row["transfer"] is not None for row in rows] == [True, False, True]
    assert "Insufficient funds" in str(rows[1]["error"])
    assert Transfer.objects.count() == 2
    balances = dict(Account.objects.values_list("pk", "balance"))
    assert (balances[a.pk], balances[b.pk]) == (Decimal("10.00"), Decimal("5.00"))
