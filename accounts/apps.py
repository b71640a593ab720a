from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def demo_seeders(self):
        from accounts.demo import accounts_seed
        from core.demo import DemoSeeder

        return [
            DemoSeeder(
                "accounts",
                40,
                "money accounts in all (default 40)",
                lambda count, progress: accounts_seed(accounts=count),
            )
        ]
