"""Capabilities a test needs.

require(cond, why): when cond is false the test cannot run. On a developer's
machine it is skipped, with the reason; where the suite must be complete
(CI is set, or H3GATE_REQUIRE_ALL=1) it fails instead, so a missing tool,
log or capability can never turn into a silently green run.
"""

import os

import pytest


def must_run_everything():
    return bool(os.environ.get("CI")) or os.environ.get("H3GATE_REQUIRE_ALL") == "1"


def require(cond, why):
    if cond:
        return
    if must_run_everything():
        pytest.fail("cannot run (CI requires every test to run): " + why,
                    pytrace=False)
    pytest.skip(why)


def require_netbench():
    """What tests/bench/netbench.py needs: network emulation (testenv.netem)
    and ngtcp2's client."""
    from testenv import netem
    from testenv.gateway import GTLSCLIENT
    why = netem.problems()
    if not os.access(GTLSCLIENT, os.X_OK):
        why.append("gtlsclient (ngtcp2-client) is not installed")
    require(not why, "network emulation unavailable: " + "; ".join(why))
