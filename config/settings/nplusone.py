"""N+1 detection with django-zeal: shared by the local and test settings, never by production.

zeal patches the ORM when its app is installed, so only local.py and test.py install it.
"""

# zeal charges a `.get()` or a lazy load to the first frame outside site-packages. Two different
# single-row reads Django makes inside one call (request.user and the user picked in an admin
# form; the session read and deleted by login(); a form's "from" and "to" accounts) land on the
# same line of ours and would count as a loop of two. A loop over a list of three is the smallest
# count only repetition produces, and every list the tests render holds three rows or more.
ZEAL_NPLUSONE_THRESHOLD = 3

# A zeal_ignore() that no longer suppresses anything is an error: allowances do not outlive the
# N+1 they were written for.
ZEAL_CHECK_UNUSED_IGNORES = True

# N+1s allowed everywhere, each with the reason: none. The fix is select_related,
# prefetch_related or only()/defer() in the selector, list_select_related in the admin. The one
# N+1 written on purpose (the naive list of the N+1 demo) is allowed where it runs, field by field,
# with zeal_ignore (config/demos.py NAIVE_LIST_N_PLUS_ONE), so those relations stay checked
# everywhere else.
ZEAL_ALLOWLIST: list[dict] = []
