"""Every registered detector through the same checks (``detectors/checks.py``)."""

import pytest

from detectors import REGISTRY
from detectors.checks import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_conformance(name, check):
    check(REGISTRY[name]())
