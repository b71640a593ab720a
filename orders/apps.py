from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def demo_seeders(self):
        from core.demo import DemoSeeder, demo_user_get
        from orders.demo import customers_seed, orders_seed, products_seed

        return [
            DemoSeeder(
                "products", 60, "products in all (default 60)", lambda n, p: products_seed(n)
            ),
            DemoSeeder(
                "customers",
                200,
                "customers in all (default 200)",
                lambda n, p: customers_seed(n, demo_user=demo_user_get()),
            ),
            DemoSeeder(
                "orders",
                500,
                "orders in all (default 500; 1000000 takes minutes)",
                lambda n, p: orders_seed(n, progress=p),
            ),
        ]
