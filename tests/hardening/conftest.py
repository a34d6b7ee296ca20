"""Hardening tests: bad inputs, faults and untrusted files.

At the end of a session that ran them, prints how many bad-input cases the catalogue holds
(and how many of those passed), so the number shows up in CI logs.
"""

from __future__ import annotations

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report) -> None:
    if "test_bad_inputs.py::test_bad_input[" in report.nodeid and (report.when == "call" or report.outcome != "passed"):
        _outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    try:
        from .test_bad_inputs import CASES
    except Exception as exc:
        terminalreporter.write_line(f"bad-input catalogue: not loaded ({type(exc).__name__}: {exc})")
        return
    ran = len(_outcomes)
    passed = sum(o == "passed" for o in _outcomes.values())
    tail = f" ({passed}/{ran} run passed)" if ran else ""
    terminalreporter.write_line(f"bad-input catalogue: {len(CASES)} cases{tail}")
