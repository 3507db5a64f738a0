"""Detectors: one per file, one protocol (see :mod:`detectors.base`), a registry by name."""

from detectors.base import AccountProfile, Detector, DetectorBase, Observation, Verdict, step
from detectors.login_frequency import LoginFrequency
from detectors.refund_abuse import RefundAbuse
from detectors.registry import REGISTRY, build
from detectors.trial_cycling import TrialCycling

__all__ = [
    "REGISTRY",
    "AccountProfile",
    "Detector",
    "DetectorBase",
    "LoginFrequency",
    "Observation",
    "RefundAbuse",
    "TrialCycling",
    "Verdict",
    "build",
    "step",
]
