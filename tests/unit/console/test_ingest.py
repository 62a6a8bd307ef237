"""Ingest: incremental, complete lines only, erasure and retention followed, reviews agreed."""

from __future__ import annotations

import json
import os
import shutil
from unittest import mock

from django.db import connection
from django.test import override_settings
from webpolicy.console import ingest as ingest_module
from webpolicy.console.cases import update_case
from webpolicy.console.ingest import ingest, is_fault, priority
from webpolicy.console.models import Case, Event, IngestState, Note
from webpolicy.safeguarding.logstore import REVIEWS_FILE, Person, ReviewStore, erase
from webpolicy.safeguarding.report import Filters, select

from . import samples
from .base import ConsoleTest, on_postgresql


class IngestTest(ConsoleTest):
    def test_runs_on_the_database_it_names(self):
        assert connection.vendor == self.database          # sqlite, or a real postgresql

    def test_records_are_indexed_once_and_only_new_lines_are_read(self):
        path = samples.write(self.log_dir, samples.record("WP-0000000001"))
        assert ingest(self.log_dir).added == 1
        assert ingest(self.log_dir).added == 0            # nothing new: nothing read
        samples.write(self.log_dir, samples.flagged("WP-0000000002"))
        result = ingest(self.log_dir)
        assert result.added == 1
        assert IngestState.objects.get(name=path.name).offset == path.stat().st_size
        event = Event.objects.get(reference="WP-0000000002")
        assert (event.user, event.action, event.search_term, event.watch_category) == (
            "bob", "flagged", "how to self harm", "Self-harm")
        assert event.record["watchlist"]["term"] == "self harm"

    def test_a_line_being_written_waits_for_its_end(self):
        path = samples.write(self.log_dir, samples.record("WP-0000000001"))
        line = json.dumps(samples.record("WP-0000000002")) + "\n"
        with open(path, "a") as out:
            out.write(line[:40])                          # the writer is mid-line
        assert ingest(self.log_dir).added == 1
        with open(path, "a") as out:
            out.write(line[40:])
        assert ingest(self.log_dir).added == 1
        assert Event.objects.count() == 2

    def test_damaged_lines_are_counted_not_fatal(self):
        path = samples.write(self.log_dir, samples.record("WP-0000000001"))
        with open(path, "a") as out:
            out.write("{not json\n[1]\n")
        samples.write(self.log_dir, samples.record("WP-0000000002"))
        result = ingest(self.log_dir)
        assert (result.added, result.bad_lines) == (2, 2)

    def test_erased_records_leave_the_index_with_their_cases(self):
        samples.write(self.log_dir, samples.record("WP-0000000001"),
                      samples.record("WP-0000000002", user="carol"))
        ingest(self.log_dir)
        update_case(Event.objects.get(reference="WP-0000000001"), "dana", "in_progress", note="x")
        erase(self.log_dir, Person(user="bob"))              # webpolicy erase --user bob
        result = ingest(self.log_dir)
        assert result.removed == 1
        assert list(Event.objects.values_list("reference", flat=True)) == ["WP-0000000002"]
        assert not Case.objects.exists() and not Note.objects.exists()

    def test_expired_files_take_their_records_with_them(self):
        path = samples.write(self.log_dir, samples.record("WP-0000000001"))
        ingest(self.log_dir)
        os.unlink(path)                                      # retention
        assert ingest(self.log_dir).removed == 1
        assert not Event.objects.exists() and not IngestState.objects.exists()

    def test_cli_reviews_become_notes_on_closed_cases(self):
        record = samples.record("WP-0000000001")
        samples.write(self.log_dir, record, samples.record("WP-0000000002"))
        ReviewStore(self.log_dir).add([record], "Spoke to learner", "mrs.k")  # webpolicy review
        assert ingest(self.log_dir).reviews == 1
        case = Case.objects.get(event__reference="WP-0000000001")
        assert case.status == Case.Status.CLOSED
        assert [(n.author, n.text, n.source) for n in case.notes.all()] == [
            ("mrs.k", "Spoke to learner", "cli")]
        assert ingest(self.log_dir).reviews == 0             # read once
        assert not Case.objects.filter(event__reference="WP-0000000002").exists()

    def test_closing_in_the_console_is_a_review_for_the_cli_and_not_imported_back(self):
        samples.write(self.log_dir, samples.record("WP-0000000001"))
        ingest(self.log_dir)
        event = Event.objects.get(reference="WP-0000000001")
        update_case(event, "dana", "closed", "no_concern", "Checked with tutor")
        reviews = ReviewStore(self.log_dir).load()
        assert [(r.by, r.note) for r in reviews["WP-0000000001"]] == [
            ("dana", "Closed (No concern): Checked with tutor")]
        ingest(self.log_dir)
        assert Note.objects.filter(case__event=event).count() == 1

    def test_re_reading_a_file_adds_nothing_twice(self):
        path = samples.write(self.log_dir, *(samples.record(f"WP-00000000{n:02}") for n in range(30)))
        assert ingest(self.log_dir).added == 30
        IngestState.objects.filter(name=path.name).update(offset=0)   # as after a crash
        assert ingest(self.log_dir).added == 0
        assert Event.objects.count() == 30

    def test_chunks_split_mid_line_and_an_interrupted_ingest_resumes_from_its_offset(self):
        records = [samples.record(f"WP-00000000{n:02}") for n in range(12)]
        path = samples.write(self.log_dir, *records)
        size = path.stat().st_size
        calls = []
        real_insert = ingest_module._Writer.insert

        def failing_third(writer, rows):         # the process dies during the third chunk
            calls.append(len(rows))
            if len(calls) == 3:
                raise OSError("killed")
            return real_insert(writer, rows)

        with (mock.patch.object(ingest_module, "CHUNK", 700),    # about two lines a chunk
              mock.patch.object(ingest_module._Writer, "insert", failing_third),
              self.assertRaises(OSError)):
            ingest(self.log_dir)
        state = IngestState.objects.get(name=path.name)
        indexed = Event.objects.count()
        assert 0 < indexed < 12 and sum(calls[:2]) == indexed
        assert 0 < state.offset < size
        with open(path, "rb") as handle:                       # the offset is a line's end
            assert handle.read(state.offset).endswith(b"\n")
        with mock.patch.object(ingest_module, "CHUNK", 700):
            assert ingest(self.log_dir).added == 12 - indexed
        assert sorted(Event.objects.values_list("reference", flat=True)) == [
            r["id"] for r in records]
        assert IngestState.objects.get(name=path.name).offset == size

    def test_a_nul_character_in_a_search_is_indexed_without_it(self):
        """PostgreSQL's text and jsonb cannot hold U+0000; a search for "%00" must not stop
        the ingest of everything after it."""
        samples.write(self.log_dir, samples.record("WP-0000000001", search_term="self\x00harm"),
                      samples.record("WP-0000000002"))
        assert ingest(self.log_dir).added == 2
        event = Event.objects.get(reference="WP-0000000001")
        assert event.search_term == "selfharm" and event.record["search_term"] == "selfharm"

    def test_a_case_reopened_in_the_console_is_unreviewed_for_the_cli(self):
        samples.write(self.log_dir, samples.record("WP-0000000001"))
        ingest(self.log_dir)
        event = Event.objects.get(reference="WP-0000000001")
        update_case(event, "dana", "closed", "no_concern", "")
        filters = Filters(unreviewed=True)
        assert select(self.log_dir, filters) == []               # `webpolicy report --unreviewed`
        update_case(event, "dana", "in_progress", note="Learner disclosed more")
        assert [r["id"] for r in select(self.log_dir, filters)] == ["WP-0000000001"]
        assert "WP-0000000001" not in ReviewStore(self.log_dir).load()
        ingest(self.log_dir)                                     # not imported back
        case = Case.objects.get(event=event)
        assert case.status == Case.Status.IN_PROGRESS
        assert [n.text for n in case.notes.all()] == [
            "Closed", "Reopened (In progress): Learner disclosed more"]

    def test_a_reopened_line_from_another_console_reopens_the_case_here(self):
        record = samples.record("WP-0000000001")
        samples.write(self.log_dir, record)
        store = ReviewStore(self.log_dir)
        store.add([record], "Dealt with", "mrs.k")
        ingest(self.log_dir)
        assert Case.objects.get().status == Case.Status.CLOSED
        store.add([record], "Reopened (In progress)", "mr.j", reopened=True)
        ingest(self.log_dir)
        assert Case.objects.get().status == Case.Status.IN_PROGRESS

    def test_classification(self):
        assert priority(samples.statutory("WP-1")) == 9
        assert priority(samples.flagged("WP-1")) == 3          # high watchlist term
        assert priority(samples.record("WP-1")) == 0           # medium
        assert priority(samples.record("WP-1", severity="critical")) == 4
        assert is_fault(samples.fault("WP-1"))
        fail_open = samples.record("WP-1", action="logged", list=None,
                                   category="Filter unavailable", severity=None)
        assert is_fault(fail_open)
        assert not is_fault(samples.record("WP-1")) and not is_fault(samples.flagged("WP-1"))


IngestOnPostgreSQL = on_postgresql(IngestTest)


class SeveralGatewaysTest(ConsoleTest):
    """Two gateways' log directories in one console: both write files of the same names."""

    def setUp(self) -> None:
        super().setUp()
        self.gw2 = self.log_dir.parent / (self.log_dir.name + "-gw2")
        self.gw2.mkdir()
        self.addCleanup(shutil.rmtree, self.gw2, ignore_errors=True)
        overrides = override_settings(WEBPOLICY_LOG_DIRS=[str(self.log_dir), str(self.gw2)])
        overrides.enable()
        self.addCleanup(overrides.disable)
        self.gw1_file = samples.write(self.log_dir, samples.record("WP-0000000001"),
                                      samples.record("WP-0000000002", user="carol"))
        self.gw2_file = samples.write(self.gw2, samples.record("WP-0000000003", user="dave"),
                                      samples.record("WP-0000000004", user="carol"))
        assert self.gw1_file.name == self.gw2_file.name      # one daily file each, same name
        self.both = [self.log_dir, self.gw2]

    def where(self) -> dict[str, str]:
        return dict(Event.objects.values_list("reference", "source_dir"))

    def test_same_named_files_are_followed_separately(self):
        assert ingest(self.both).added == 4
        gw1, gw2 = str(self.log_dir.resolve()), str(self.gw2.resolve())
        assert self.where() == {"WP-0000000001": gw1, "WP-0000000002": gw1,
                                "WP-0000000003": gw2, "WP-0000000004": gw2}
        states = {(s.directory, s.name): s.offset for s in IngestState.objects.all()}
        assert states == {(gw1, self.gw1_file.name): self.gw1_file.stat().st_size,
                          (gw2, self.gw2_file.name): self.gw2_file.stat().st_size}
        samples.write(self.gw2, samples.record("WP-0000000005"))   # only gw2 grew
        assert ingest(self.both).added == 1
        assert ingest(self.both).added == 0

    def test_a_file_gone_in_one_directory_takes_only_its_records(self):
        ingest(self.both)
        os.unlink(self.gw1_file)                                   # gw1's retention
        assert ingest(self.both).removed == 2
        assert sorted(self.where()) == ["WP-0000000003", "WP-0000000004"]

    def test_erasure_in_one_directory_reaches_only_its_records(self):
        ingest(self.both)
        erase(self.gw2, Person(user="carol"))                      # erase --log-dir gw2
        assert ingest([self.gw2]).removed == 1                     # as sync_console does
        assert sorted(self.where()) == ["WP-0000000001", "WP-0000000002", "WP-0000000003"]

    def test_a_missing_directory_is_not_an_empty_log(self):
        ingest(self.both)
        shutil.rmtree(self.gw2)                                    # a share not mounted
        assert ingest(self.both).removed == 0
        assert Event.objects.count() == 4

    def test_closing_a_case_reviews_beside_the_records_own_log(self):
        ingest(self.both)
        update_case(Event.objects.get(reference="WP-0000000004"), "dana", "closed",
                    "no_concern", "checked")
        assert list(ReviewStore(self.gw2).load()) == ["WP-0000000004"]
        assert not (self.log_dir / REVIEWS_FILE).exists()
        # `webpolicy report --log-dir gw1 --log-dir gw2 --unreviewed` agrees
        open_ones = [r["id"] for d in self.both
                     for r in select(d, Filters(unreviewed=True), ReviewStore(d).load())]
        assert sorted(open_ones) == ["WP-0000000001", "WP-0000000002", "WP-0000000003"]
        assert ingest(self.both).reviews == 0                      # not imported back

    def test_cli_reviews_in_either_directory_become_notes(self):
        ingest(self.both)
        ReviewStore(self.gw2).add([samples.record("WP-0000000003")], "Spoke to dave", "mrs.k")
        assert ingest(self.both).reviews == 1
        case = Case.objects.get(event__reference="WP-0000000003")
        assert case.status == Case.Status.CLOSED and case.notes.get().text == "Spoke to dave"

    def test_an_index_from_one_directory_is_adopted_by_it(self):
        ingest([self.gw2])                     # a console that followed gw2 alone ...
        # ... in a database from before several directories (migration 0004): no directory
        IngestState.objects.update(directory="")
        Event.objects.update(source_dir=None)
        assert ingest(self.both).added == 2                        # gw1's records, new to it
        gw1, gw2 = str(self.log_dir.resolve()), str(self.gw2.resolve())
        assert not IngestState.objects.filter(directory="").exists()
        assert IngestState.objects.get(directory=gw2).offset == self.gw2_file.stat().st_size
        assert self.where() == {"WP-0000000001": gw1, "WP-0000000002": gw1,
                                "WP-0000000003": gw2, "WP-0000000004": gw2}


SeveralGatewaysOnPostgreSQL = on_postgresql(SeveralGatewaysTest)
