"""The console as a Django application (label `console`)."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "webpolicy.console"
    label = "console"
    verbose_name = "Safeguarding console"
    default_auto_field = "django.db.models.BigAutoField"
