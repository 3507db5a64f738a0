"""Detectors by name. Nothing runs at import: the registry holds factories.

>>> sorted(REGISTRY)
['login_frequency', 'refund_abuse', 'trial_cycling']
>>> [d.name for d in build()]
['trial_cycling', 'login_frequency', 'refund_abuse']
>>> (build(["refund_abuse"], settings={"refund_abuse": {"serial_min_refunds": 4}})[0]
...     .serial_min_refunds)
4
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from detectors.base import Detector
from detectors.login_frequency import LoginFrequency
from detectors.refund_abuse import RefundAbuse
from detectors.trial_cycling import TrialCycling

__all__ = ["REGISTRY", "build", "load_settings"]

REGISTRY: dict[str, Callable[..., Detector]] = {
    TrialCycling.name: TrialCycling,
    LoginFrequency.name: LoginFrequency,
    RefundAbuse.name: RefundAbuse,
}


def build(
    names: Iterable[str] | None = None,
    *,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Detector]:
    """Instantiate detectors by name (all by default) with optional keyword settings."""
    settings = settings or {}
    chosen = list(REGISTRY) if names is None else list(names)
    unknown = [name for name in [*chosen, *settings] if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(REGISTRY)}")
    detectors = []
    for name in chosen:
        try:
            detectors.append(REGISTRY[name](**settings.get(name, {})))
        except TypeError as error:  # an unknown or positional setting
            raise ValueError(f"bad settings for {name}: {error}") from error
    return detectors


def load_settings(path: str) -> dict[str, dict[str, Any]]:
    """Read ``{"detector name": {"setting": value, ...}, ...}`` from a JSON file."""
    import json

    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read settings {path}: {error}") from error
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"settings {path}: expected {{detector: {{setting: value}}}}")
    return data
