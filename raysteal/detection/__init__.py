"""Query-log detection of model-stealing accounts: features of what each account asked the black
box, a detector calibrated on real users' traffic, and its ROC/AUC. Reads the server's query log
only (:mod:`raysteal.oracle.querylog`), never a model."""

from raysteal.detection.detector import Detector, fit_detector
from raysteal.detection.evaluate import evaluate_detection, render_detection
from raysteal.detection.features import CONTENT_FEATURES, FEATURES, account_queries
from raysteal.detection.roc import roc_auc, roc_curve

__all__ = [
    "CONTENT_FEATURES",
    "FEATURES",
    "Detector",
    "account_queries",
    "evaluate_detection",
    "fit_detector",
    "render_detection",
    "roc_auc",
    "roc_curve",
]
