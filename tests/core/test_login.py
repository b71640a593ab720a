"""The login page: field errors, nothing echoed, and failed logins throttled (django-axes)."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.backends import ModelBackend
from django.test import RequestFactory
from django.utils import timezone

from core.login import client_address
from tests.factories import user_create

pytestmark = pytest.mark.django_db

PASSWORD = "right-horse-battery"


@pytest.fixture
def alice():
    user = user_create("alice")
    user.set_password(PASSWORD)
    user.save()
    return user


def login(client, username, password, address="10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.parametrize(
    "data, errors",
    [
        ({}, 2),
        ({"username": "alice"}, 1),
        ({"password": "x"}, 1),
        ({"username": "   ", "password": ""}, 2),
    ],
)
def test_empty_username_or_password_shows_a_field_error(client, data, errors):
    response = client.post("/login/", data)
    assert response.status_code == 200
    assert response.content.count(b"This field is required.") == errors
    assert AccessAttempt.objects.count() == 0


def test_over_long_username_is_a_field_error_and_never_reaches_the_throttle(client):
    # Django's own form only sets the HTML maxlength; the name went on to authenticate() and to
    # the throttle's 255-character column: a 500.
    response = client.post("/login/", {"username": "x" * 3000, "password": "x"})
    assert response.status_code == 200
    assert b"at most 150 characters" in response.content
    assert b"x" * 151 not in response.content  # not echoed either
    assert AccessAttempt.objects.count() == 0


def test_wrong_password_keeps_the_username_and_says_so(client, alice):
    response = login(client, "alice", "wrong")
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert b'value="alice"' in response.content


def test_a_failed_login_says_how_many_tries_are_left_before_the_lock(client, alice, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for left in range(limit - 1, 0, -1):
        page = login(client, "alice", f"guess-{left}").content.decode()
        tries = "1 more failed attempt" if left == 1 else f"{left} more failed attempts"
        assert f"{tries} and this login is locked from this address for 15 minutes." in page
    assert login(client, "alice", "guess-last").status_code == 429


def test_the_warning_counts_the_addresss_failures_over_every_username(client, alice, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 8
    for i in range(6):
        login(client, f"user{i}", "guess", address="10.0.0.99")
    page = login(client, "alice", "guess", address="10.0.0.99").content.decode()
    # 7 of the address's 8, scaled onto the per-login limit of 5: 4 used, 1 left.
    assert "1 more failed attempt and this login is locked" in page


def test_a_nul_in_the_username_is_refused_and_never_echoed(client):
    response = client.post("/login/", {"username": "zqx\x00qzx", "password": "x"})
    assert response.status_code == 400
    assert b"\x00" not in response.content and b"zqx" not in response.content


def test_without_the_nul_middleware_the_form_still_refuses_and_does_not_echo(client, settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "RejectNulBytes" not in m]
    response = client.post("/login/", {"username": "zqx\x00qzx", "password": "x"})
    assert response.status_code == 200
    assert b"Null characters are not allowed." in response.content
    assert b"\x00" not in response.content and b"zqx" not in response.content


def test_the_admin_login_refuses_an_over_long_username_too(client):
    response = client.post("/admin/login/", {"username": "y" * 3000, "password": "x"})
    assert response.status_code == 200
    assert AccessAttempt.objects.count() == 0


def test_thirty_wrong_passwords_are_not_all_checked(client, alice, monkeypatch, settings):
    checked = []
    real = ModelBackend.authenticate

    def counting(self, request, username=None, password=None, **kwargs):
        checked.append(password)
        return real(self, request, username=username, password=password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", counting)
    statuses = [login(client, "alice", f"guess-{i}").status_code for i in range(30)]
    limit = settings.AXES_FAILURE_LIMIT
    # The limit-th failure is answered with the lockout page; after it nothing is checked.
    assert statuses == [200] * (limit - 1) + [429] * (30 - limit + 1)
    assert len(checked) == limit


def test_a_locked_username_is_refused_even_with_the_right_password_then_a_page_says_when(
    client, alice, settings
):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", f"guess-{i}")
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert b"Try again in 15 minutes" in response.content
    assert "_auth_user_id" not in client.session


def test_the_lock_is_per_address_so_the_owner_logs_in_from_elsewhere(client, alice, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", f"guess-{i}", address="10.0.0.66")
    assert login(client, "alice", PASSWORD, address="10.0.0.66").status_code == 429
    assert login(client, "alice", PASSWORD, address="10.0.0.7").status_code == 302


def test_the_owner_logging_in_elsewhere_does_not_clear_a_guessers_failures(client, alice, settings):
    """The throttle is keyed on the pair (username, address), and so is the reset a success
    makes. Keyed on the username alone, every login of the owner wiped the failures of whoever
    was guessing the password from another address, who could go on for ever."""
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit - 1):
        assert login(client, "alice", f"guess-{i}", address="10.0.0.66").status_code == 200
    assert login(client, "alice", PASSWORD, address="10.0.0.7").status_code == 302
    client.logout()
    assert login(client, "alice", "guess-last", address="10.0.0.66").status_code == 429


def test_one_address_trying_many_usernames_is_locked_for_all(client, alice, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 8
    for i in range(8):  # one or two tries per name: no username reaches its own limit
        login(client, f"user{i // 2}", "guess", address="10.0.0.99")
    assert login(client, "alice", PASSWORD, address="10.0.0.99").status_code == 429
    assert login(client, "alice", PASSWORD, address="10.0.0.100").status_code == 302


def test_below_the_address_limit_other_usernames_still_log_in(client, alice, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 8
    for i in range(7):
        login(client, f"user{i}", "guess", address="10.0.0.99")
    assert login(client, "alice", PASSWORD, address="10.0.0.99").status_code == 302


def test_the_lock_ends_after_the_cool_off(client, alice, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", f"guess-{i}")
    assert login(client, "alice", PASSWORD).status_code == 429
    # As if the cool-off had passed since the last failure.
    past = timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=past)
    assert login(client, "alice", PASSWORD).status_code == 302


def test_a_success_clears_that_usernames_failures_but_not_the_addresss(client, alice, settings):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "alice", f"guess-{i}")
    login(client, "mallory", "guess")
    assert login(client, "alice", PASSWORD).status_code == 302
    assert list(AccessAttempt.objects.values_list("username", flat=True)) == ["mallory"]
    client.logout()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "alice", f"again-{i}").status_code == 200


def test_failed_admin_logins_count_too(client, alice, settings):
    alice.is_staff = True
    alice.save()
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "alice", "password": f"g{i}"})
    response = client.post("/admin/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429


@pytest.mark.parametrize(
    "proxies, remote, forwarded, expected",
    [
        (0, "10.0.0.1", "6.6.6.6", "10.0.0.1"),  # no proxy: the header is the client's to forge
        (1, "10.0.0.1", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the one the proxy appended
        (2, "10.0.0.1", "6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        (1, "10.0.0.1", "not-an-address", "10.0.0.1"),
        (2, "10.0.0.1", "203.0.113.9", "10.0.0.1"),  # fewer hops than proxies: not trusted
        (1, "10.0.0.1", "²", "10.0.0.1"),
        (0, "garbage", "", None),
    ],
)
def test_client_address_trusts_only_the_configured_proxies(
    settings, proxies, remote, forwarded, expected
):
    settings.TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
