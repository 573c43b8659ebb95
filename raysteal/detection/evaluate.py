"""Detection measured on a simulation: ROC/AUC per attack and budget, and what each attacker had
stolen before it was flagged.

The benign accounts are split in two (alternately, by account name): the detector is calibrated
on one half and every score is measured on the other half and the attackers, so no benign
account is scored by a detector fitted to its own traffic. The detector sees the log only;
the labels (who is benign, which attack at which budget) and the agreement each attacker reached
are joined to its scores afterwards.

*Fidelity before flagged*: an attacker flagged after ``n`` queries had, at that point, what its
attack reaches with ``n`` queries; that is read from the attackers of the same attack that
finished within ``n`` queries (the best agreement among them, at most the attacker's own final
one), and is NaN when none did (flagged before the smallest budget measured finished: nothing
measured, the report says so). An attacker never flagged keeps its own final agreement.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pyarrow as pa

from raysteal.detection.detector import Detector, checked_fpr, fit_detector
from raysteal.detection.features import CONTENT_FEATURES, FEATURES, account_queries
from raysteal.detection.roc import roc_auc
from raysteal.errors import ConfigError

BENIGN = "benign"
ATTACKER = "attacker"


def split_benign(accounts: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(calibration, held-out) benign account names: alternate accounts in name order."""
    benign = sorted(accounts.loc[accounts["role"] == BENIGN, "account"].astype(str))
    if len(benign) < 4:
        raise ConfigError(f"detection needs at least 4 benign accounts (half calibrate, half are scored), got {len(benign)}")
    return benign[::2], benign[1::2]


def _fidelity_before(flag: int | None, own: float, peers: pd.DataFrame) -> float:
    if flag is None:
        return own
    within = peers.loc[peers["queries"] <= flag, "fidelity"]
    return min(float(within.max()), own) if len(within) else math.nan


def _mean(values: pd.Series) -> float:
    """The mean of the measured values (NaN when none was)."""
    return float(values.mean()) if values.notna().any() else math.nan


def evaluate_detection(
    log: pa.Table | pd.DataFrame,
    accounts: pd.DataFrame,
    outcomes: pd.DataFrame,
    catalogue: int,
    fpr: float = 0.01,
) -> tuple[pd.DataFrame, pd.DataFrame, Detector]:
    """``(per_account, per_group, detector)``.

    ``accounts``: ``account, role`` (``benign`` / ``attacker``), ``attack``, ``budget``.
    ``outcomes``: per attacker account ``account, queries, fidelity`` (its agreement). ``fpr``: the
    calibration's false-positive rate that sets the flagging threshold.
    """
    fpr = checked_fpr(fpr)
    frame = log if isinstance(log, pd.DataFrame) else log.to_pandas()
    missing = [c for c in ("account", "role", "attack", "budget") if c not in accounts.columns]
    if missing:
        raise ConfigError(f"accounts: no column(s) {', '.join(missing)}")
    calibration, _ = split_benign(accounts)
    in_calibration = frame["attacker"].astype(str).isin(calibration)
    detector = fit_detector(frame[in_calibration], catalogue)
    queries = account_queries(frame[~in_calibration])
    scored = detector.score_queries(queries)
    threshold, content_threshold = detector.threshold(fpr), detector.threshold(fpr, content=True)
    labels = accounts[["account", "role", "attack", "budget"]].astype({"account": str})
    scored = scored.merge(labels, on="account", how="inner")
    scored = scored.merge(outcomes[["account", "queries", "fidelity"]].rename(columns={"queries": "spent"}), on="account", how="left")
    scored["flagged"] = scored["score"] > threshold
    scored["content_flagged"] = scored["content_score"] > content_threshold
    for column, limit, content in (("flagged_at", threshold, False), ("content_flagged_at", content_threshold, True)):
        scored[column] = [
            detector.flagged_at(queries[a], limit, content=content) if role == ATTACKER else None
            for a, role in zip(scored["account"], scored["role"])
        ]
    attackers = scored[scored["role"] == ATTACKER].copy()
    benign = scored[scored["role"] == BENIGN]
    if attackers.empty or benign.empty:
        raise ConfigError(f"detection needs scored attackers and held-out benign accounts, got {len(attackers)} and {len(benign)}")
    peers = outcomes.merge(labels[["account", "attack"]], on="account")
    for column, flags in (("fidelity_before_flag", "flagged_at"), ("fidelity_before_content_flag", "content_flagged_at")):
        attackers[column] = [
            _fidelity_before(
                None if flag is None or (isinstance(flag, float) and math.isnan(flag)) else int(flag), own, peers[peers["attack"] == attack]
            )
            for flag, own, attack in zip(attackers[flags], attackers["fidelity"], attackers["attack"])
        ]
    scored = scored.merge(attackers[["account", "fidelity_before_flag", "fidelity_before_content_flag"]], on="account", how="left")
    benign_fpr, benign_content_fpr = float(benign["flagged"].mean()), float(benign["content_flagged"].mean())
    groups = []
    for (attack, budget), group in attackers.groupby(["attack", "budget"], sort=True):
        both = pd.concat([group, benign])
        y = (both["role"] == ATTACKER).to_numpy()
        flagged_at = pd.to_numeric(group["flagged_at"], errors="coerce")
        content_at = pd.to_numeric(group["content_flagged_at"], errors="coerce")
        row: dict[str, Any] = {
            "attack": attack,
            "budget": int(budget),
            "attackers": len(group),
            "benign": len(benign),
            "queries": float(group["queries"].mean()),
            "auc": roc_auc(both["score"], y),
            "auc_content": roc_auc(both["content_score"], y),
            **{f"auc_{f}": roc_auc(both[f], y) for f in FEATURES},
            "threshold": threshold,
            "fpr_target": fpr,
            "benign_fpr": benign_fpr,
            "flagged": float(group["flagged"].mean()),
            "queries_to_flag_p50": float(flagged_at.median()) if flagged_at.notna().any() else math.nan,
            "fidelity_final": float(group["fidelity"].mean()),
            "fidelity_before_flag": _mean(group["fidelity_before_flag"]),
            "content_threshold": content_threshold,
            "benign_content_fpr": benign_content_fpr,
            "content_flagged": float(group["content_flagged"].mean()),
            "queries_to_content_flag_p50": float(content_at.median()) if content_at.notna().any() else math.nan,
            "fidelity_before_content_flag": _mean(group["fidelity_before_content_flag"]),
        }
        groups.append(row)
    return scored, pd.DataFrame(groups), detector


def render_detection(results: pd.DataFrame, title: str = "Query-log detection", note: str = "") -> str:
    """A markdown page of :func:`evaluate_detection`'s per-group table."""
    if results.empty:
        raise ConfigError("no detection results to render")
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    first = results.iloc[0]
    lines += [
        f"Thresholds flag {first['fpr_target']:.1%} of the calibration's benign accounts: score {first['threshold']:.2f}, "
        f"content score {first['content_threshold']:.2f}. Measured on {int(first['benign'])} held-out benign accounts: "
        f"false-positive rate {first['benign_fpr']:.1%} (score), {first['benign_content_fpr']:.1%} (content score).",
        "",
    ]

    def fid(value: float) -> str:
        return "flagged first" if math.isnan(value) else f"{value:.4f}"

    def count(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.0f}"

    head = [
        "attack",
        "budget",
        "accounts",
        "queries",
        "AUC",
        "flagged",
        "queries to flag (p50)",
        "fidelity before flag",
        "AUC content",
        "flagged by content",
        "queries to content flag (p50)",
        "fidelity before content flag",
        "fidelity final",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results.to_dict("records"):
        lines.append(
            f"| {r['attack']} | {r['budget']} | {r['attackers']} | {r['queries']:.0f} | {r['auc']:.3f} | {r['flagged']:.0%} | "
            f"{count(r['queries_to_flag_p50'])} | {fid(r['fidelity_before_flag'])} | {r['auc_content']:.3f} | "
            f"{r['content_flagged']:.0%} | {count(r['queries_to_content_flag_p50'])} | {fid(r['fidelity_before_content_flag'])} | "
            f"{r['fidelity_final']:.4f} |"
        )
    lines += [
        "",
        "*flagged first*: flagged before the smallest budget of that attack had finished, so no agreement was measured "
        "at that point (it is at most the agreement of that smallest budget).",
        "",
    ]
    lines += ["", "AUC of each feature alone:", ""]
    lines += ["| attack | budget | " + " | ".join(FEATURES) + " |", "|" + "---|" * (len(FEATURES) + 2)]
    for r in results.to_dict("records"):
        lines.append(f"| {r['attack']} | {r['budget']} | " + " | ".join(f"{r[f'auc_{f}']:.3f}" for f in FEATURES) + " |")
    lines += ["", f"Content features (no volume or rate): {', '.join(CONTENT_FEATURES)}.", ""]
    return "\n".join(lines)
