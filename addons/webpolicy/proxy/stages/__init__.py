"""Stages: request rules that run after the decision, on a flow nothing has answered yet.

Each stage is given a `StageHost` (the Gate, gate.py) and never imports the add-on: this
protocol is all a stage may ask of it.  Stages are called from the add-on's own hooks, in
order, instead of being registered with mitmproxy, which dispatches every event (eight or so
per request) to every add-on: one add-on that runs them costs less than three.
"""

from __future__ import annotations

from typing import Protocol

from mitmproxy import http

from webpolicy.engine.decision import Decision
from webpolicy.policy.model import Profile


class StageHost(Protocol):
    def identify(self, flow: http.HTTPFlow) -> tuple[Profile, str] | None:
        """The client's profile and why; None until a policy is loaded."""

    def circumvention_refusal(self, flow: http.HTTPFlow, host: str,
                              port: int | None) -> Decision | None:
        """The refusal the client's connect rules give `host`, if any."""

    def refuse_request(self, flow: http.HTTPFlow, decision: Decision) -> None:
        """Record the decision and, if it blocks, answer with the block page."""

    def stage_failed(self, flow: http.HTTPFlow, exc: BaseException) -> None:
        """A stage raised: fail closed for profiles that block."""
