"""Score flags against labelled traffic: precision, recall and F1 per detector, and how many
benign look-alikes each kind had flagged.

An account counts as flagged by detector D when it is the account of a D flag or, for
trial_cycling, in the related accounts of a trial_cycling flag (the contract's rule).

>>> labels = {"abuse": [{"kind": "brute_force", "detector": "login_frequency",
...                      "accounts": ["a1", "a2"]}],
...           "benign": [{"kind": "mistyper", "accounts": ["b1"]}]}
>>> flags = [{"detector": "login_frequency", "account_id": "a1", "related_accounts": []}]
>>> report = evaluate(labels, flags)
>>> report.detectors["login_frequency"]
{'precision': 1.0, 'recall': 0.5, 'f1': 0.6667, 'flagged': 1, 'positives': 2, 'true_positives': 1}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Evaluation", "evaluate", "flagged_accounts"]


@dataclass
class Evaluation:
    detectors: dict[str, dict[str, float]] = field(default_factory=dict)
    benign: dict[str, dict[str, float]] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"{'detector':18s} {'precision':>9s} {'recall':>7s} {'f1':>6s} "
                 f"{'flagged':>8s} {'positives':>9s}"]
        for name, m in sorted(self.detectors.items()):
            lines.append(f"{name:18s} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} "
                         f"{m['flagged']:8d} {m['positives']:9d}")
        lines.append("")
        lines.append(f"{'abuse kind':22s} {'recall':>7s} {'accounts':>9s}")
        for kind, m in sorted(self.by_kind.items()):
            lines.append(f"{kind:22s} {m['recall']:7.3f} {m['accounts']:9d}")
        lines.append("")
        lines.append(f"{'benign look-alike':22s} {'flagged':>8s} {'accounts':>9s} {'rate':>6s}")
        for kind, m in sorted(self.benign.items()):
            lines.append(f"{kind:22s} {m['flagged']:8d} {m['accounts']:9d} {m['rate']:6.1%}")
        return "\n".join(lines)


def flagged_accounts(flags: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Detector -> accounts it flagged, by the contract's counting rule."""
    flagged: dict[str, set[str]] = {}
    for flag in flags:
        accounts = flagged.setdefault(flag["detector"], set())
        accounts.add(flag["account_id"])
        if flag["detector"] == "trial_cycling":
            accounts.update(flag.get("related_accounts") or ())
    return flagged


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0


def evaluate(labels: Mapping[str, Any], flags: Iterable[Mapping[str, Any]]) -> Evaluation:
    flagged = flagged_accounts(flags)
    positives: dict[str, set[str]] = {}
    result = Evaluation()
    for group in labels.get("abuse", []):
        positives.setdefault(group["detector"], set()).update(group["accounts"])
    for detector in sorted(set(positives) | set(flagged)):
        truth, got = positives.get(detector, set()), flagged.get(detector, set())
        hits = len(truth & got)
        precision, recall = _ratio(hits, len(got)), _ratio(hits, len(truth))
        f1 = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
        result.detectors[detector] = {"precision": precision, "recall": recall, "f1": f1,
                                      "flagged": len(got), "positives": len(truth),
                                      "true_positives": hits}
    kinds: dict[str, tuple[str, set[str]]] = {}
    for group in labels.get("abuse", []):
        detector, accounts = kinds.setdefault(group["kind"], (group["detector"], set()))
        accounts.update(group["accounts"])
    for kind, (detector, accounts) in kinds.items():
        got = flagged.get(detector, set())
        result.by_kind[kind] = {"recall": _ratio(len(accounts & got), len(accounts)),
                                "accounts": len(accounts)}
    anything = set().union(*flagged.values()) if flagged else set()
    benign: dict[str, set[str]] = {}
    for group in labels.get("benign", []):
        benign.setdefault(group["kind"], set()).update(group["accounts"])
    for kind, accounts in benign.items():
        hit = len(accounts & anything)
        result.benign[kind] = {"flagged": hit, "accounts": len(accounts),
                               "rate": _ratio(hit, len(accounts))}
    return result
