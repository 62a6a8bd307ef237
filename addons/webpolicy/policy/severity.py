"""The severities a list or watchlist category can have, lowest first.

One ordering for everything that compares them: the decision (the most severe hit wins a tie),
alerts (high and above are sent at once), reports and the watchlist.  It lives with the policy
because policy.yaml is where severities are written and validated.
"""

from __future__ import annotations

SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES, start=1)}
