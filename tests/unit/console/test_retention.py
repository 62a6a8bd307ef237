"""Retention and erasure reach the console's database even when nobody opens a page."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from django.test import TransactionTestCase
from webpolicy.console import retention
from webpolicy.console.cases import update_case
from webpolicy.console.ingest import ingest, reset_throttle
from webpolicy.console.models import AccessLog, Case, Event
from webpolicy.safeguarding.logstore import Person, erase

from . import samples
from .base import ConsoleTest


class RetentionTest(ConsoleTest):
    def test_days_past_retention_leave_the_index_even_while_their_file_remains(self):
        today = dt.datetime.now(dt.UTC).date()
        samples.write(self.log_dir, samples.record("WP-0000000001", minutes_ago=60 * 24 * 31),
                      samples.record("WP-0000000002", minutes_ago=60 * 24 * 29),
                      samples.record("WP-0000000003"))
        ingest(self.log_dir)
        update_case(Event.objects.get(reference="WP-0000000001"), "dana", "in_progress",
                    note="looking")
        old = AccessLog.objects.create(username="dana", what="person", subject="user bob")
        AccessLog.objects.filter(pk=old.pk).update(time=dt.datetime.now(dt.UTC)
                                                   - dt.timedelta(days=31))
        AccessLog.objects.create(username="dana", what="person", subject="user carol")
        assert retention.purge_expired(30, today) == (1, 1)
        assert sorted(Event.objects.values_list("reference", flat=True)) == [
            "WP-0000000002", "WP-0000000003"]
        assert not Case.objects.exists()                     # the case went with its event
        assert list(AccessLog.objects.values_list("subject", flat=True)) == ["user carol"]
        ingest(self.log_dir)                                  # its file is not read back in
        assert Event.objects.count() == 2



class UpkeepTest(TransactionTestCase):
    """A real thread with its own database connection: committed data, not a test transaction."""

    def test_the_upkeep_thread_follows_erasure_without_a_request(self):
        self.log_dir = Path(tempfile.mkdtemp(prefix="wp-log-"))
        self.addCleanup(shutil.rmtree, self.log_dir, ignore_errors=True)
        reset_throttle()
        samples.write(self.log_dir, samples.record("WP-0000000001", user="bob"),
                      samples.record("WP-0000000002", user="carol"))
        ingest(self.log_dir)
        erase(self.log_dir, Person(user="bob"))
        upkeep = retention.Upkeep([self.log_dir], 30, every=0.05)
        upkeep.start()
        try:
            deadline = time.monotonic() + 10
            while Event.objects.filter(user="bob").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            upkeep.stop()
        assert list(Event.objects.values_list("user", flat=True)) == ["carol"]
