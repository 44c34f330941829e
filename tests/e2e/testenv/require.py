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
