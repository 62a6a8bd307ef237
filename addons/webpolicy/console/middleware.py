"""Ingest the log before pages are built, at most once a second (see ingest.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from webpolicy.console.ingest import ingest_if_due

log = logging.getLogger(__name__)


class IngestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path != "/console.css":
            try:
                ingest_if_due(Path(settings.WEBPOLICY_LOG_DIR))
            except Exception:                # an unreadable log must not hide the console
                log.exception("ingesting the safeguarding log failed")
        return self.get_response(request)
