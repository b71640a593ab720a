"""Dates and times as the site shows them, for Django's admin too (``FORMAT_MODULE_PATH``): one
format everywhere, with the time zone, instead of the site's 2026-12-05 07:16 beside the admin's
Dec. 5, 2026, 7:16 a.m. Numbers keep Django's defaults: ids must never be grouped (they go into
URLs); amounts and stock are grouped where they are shown (money_format, intcomma)."""

DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
