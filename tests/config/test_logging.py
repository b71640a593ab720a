"""Logs a person can act on: a 500's traceback on stderr under production settings, every line of a
request with its id, the id in the response."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.test import Client

from config.request_id import SANE
from tests.helpers import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

# One request under production settings, in a process of its own (the settings and the logging
# configuration are the production ones), with the home page's view made to fail.
REQUEST = """
import sys
from unittest import mock
import django
django.setup()
import config.views
import logging
from django.test import Client
render, failed = config.views.render, []
def fail_once(*args, **kwargs):  # the home page's render, not the 500 page's
    if not failed:
        failed.append(True)
        logging.getLogger("dbops").warning("a warning of the request, before its failure")
        raise RuntimeError("boom for the test")
    return render(*args, **kwargs)
with mock.patch.object(config.views, "render", side_effect=fail_once):
    response = Client(raise_request_exception=False).get(
        "/", secure=True, headers={"X-Request-ID": sys.argv[1]}
    )
print(response.status_code, response["X-Request-ID"])
"""
LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def production_request(request_id: str) -> tuple[str, str]:
    run = subprocess.run(
        [sys.executable, "-c", REQUEST, request_id],
        cwd=ROOT,
        env=subprocess_env(
            DJANGO_SETTINGS_MODULE="config.settings.production",
            DJANGO_SECRET_KEY="a-production-like-secret-key-for-this-test-only-0123456789",
            DJANGO_ALLOWED_HOSTS="testserver",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip(), run.stderr


def test_production_logs_a_500_with_its_traceback_and_request_id_on_stderr():
    stdout, stderr = production_request("req-4711")
    assert stdout == "500 req-4711"
    assert "ERROR django.request [req-4711] Internal Server Error: /" in stderr
    assert "Traceback (most recent call last)" in stderr
    assert "RuntimeError: boom for the test" in stderr
    lines = [line for line in stderr.splitlines() if LINE_START.match(line)]
    assert "WARNING dbops [req-4711] a warning of the request" in lines[0]
    assert all("[req-4711]" in line for line in lines), lines


def test_an_id_that_is_not_sane_is_replaced_by_a_new_one():
    stdout, stderr = production_request("two words\r\nforged: line")
    status, request_id = stdout.split(" ", 1)
    assert status == "500" and re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert f"[{request_id}] Internal Server Error: /" in stderr
    assert "forged" not in stderr


def test_every_response_carries_a_request_id():
    first, second = Client().get("/health/live"), Client().get("/health/live")
    assert SANE.fullmatch(first["X-Request-ID"]) and first["X-Request-ID"] != second["X-Request-ID"]
    echoed = Client().get("/health/live", headers={"X-Request-ID": "lb-1a2b:3c"})
    assert echoed["X-Request-ID"] == "lb-1a2b:3c"
    assert (
        len(Client().get("/health/live", headers={"X-Request-ID": "x" * 129})["X-Request-ID"]) == 32
    )
