from config.patterns import patterns_for

# Which navigation link a page belongs to, by URL name.
NAV = {
    "accounts:overview": "accounts",
    "accounts:account_edit": "accounts",
    "accounts:transfer_create": "transfer_new",
    "accounts:transfer_list": "transfers",
    "orders:order_list": "orders",
    "orders:order_detail": "orders",
    "orders:customer_detail": "orders",
    "orders:order_create": "order_new",
    "orders:report_top_customers": "reports",
    "orders:product_list": "products",
    "orders:product_detail": "products",
    "health:status": "health",
}


def page(request):
    """What the navigation and the footer need: the page's patterns and what this user may open."""
    match = getattr(request, "resolver_match", None)
    view_name = match.view_name if match else ""
    user = getattr(request, "user", None)

    # Callables, so the user is loaded only if a template asks: an error page rendered while
    # the database is down must not need it.
    def customer() -> bool:
        # The customer profile comes joined to the user (config.auth): no query here.
        return bool(user and user.is_authenticated and getattr(user, "customer", None))

    def staff() -> bool:
        return bool(user and user.is_authenticated and user.is_staff)

    return {
        "page_patterns": [
            {"slug": p.slug, "name": p.name, "code": p.code_on(view_name)}
            for p in patterns_for(view_name)
        ],
        "nav_current": "patterns" if view_name.startswith("patterns:") else NAV.get(view_name, ""),
        "nav_customer": customer,
        "nav_staff": staff,
    }
