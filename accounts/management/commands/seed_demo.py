from django.core.management.base import BaseCommand

from accounts.demo import DEMO_PASSWORD, DEMO_USERNAME, demo_user_ensure


class Command(BaseCommand):
    help = "Load the demo data set and create the demo staff login; safe to run again (idempotent)."

    def handle(self, *args, **options):
        demo_user_ensure()
        if options["verbosity"]:
            self.stdout.write(self.style.SUCCESS(f"Demo login: {DEMO_USERNAME} / {DEMO_PASSWORD}"))
