"""Ingest the log before pages are built, at most once a second (see ingest.py)."""

from __future__ import annotations

import logging

from webpolicy.console.ingest import configured_directories, ingest_if_due

log = logging.getLogger(__name__)


class IngestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path != "/console.css":
            try:
                ingest_if_due(configured_directories())
            except Exception:                # an unreadable log must not hide the console
                log.exception("ingesting the safeguarding log failed")
        return self.get_response(request)
