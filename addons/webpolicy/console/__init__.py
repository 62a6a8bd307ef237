"""The safeguarding console: a Django web application for Designated Safeguarding Leads.

It runs in its own process (`webpolicy console`), never inside the proxy: a bug or a slow page
here must not touch filtering.  The JSONL log stays the system of record; the console keeps an
index of its records (ingest.py) and the case work DSLs do on them (models.py).
"""
