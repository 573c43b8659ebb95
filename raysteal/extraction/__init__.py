"""Black-box extraction of sequential recommenders: DFME (Yue et al. 2021, :mod:`~raysteal.extraction.dfme`),
BAHSD (:mod:`~raysteal.extraction.bahsd`), and Zhu et al.'s attacks on sequential targets (Table 8,
:mod:`~raysteal.extraction.zhu_sequential`): one file per source paper beside the shared parts
(synthesis, probing, the student loop, losses), each recipe registered in the one registry of
both families (:mod:`raysteal.attacks.registry`); importing this package registers them."""

from raysteal.attacks.result import AttackResult
from raysteal.extraction import bahsd, dfme, zhu_sequential  # noqa: F401  (registers their recipes)
from raysteal.extraction.config import ExtractionConfigBase, make_extraction_config
from raysteal.extraction.result import run_extraction
from raysteal.extraction.types import ExtractionSet, SequenceKnowledge, StudentBatch, StudentObjective

__all__ = [
    "AttackResult",
    "ExtractionConfigBase",
    "ExtractionSet",
    "SequenceKnowledge",
    "StudentBatch",
    "StudentObjective",
    "make_extraction_config",
    "run_extraction",
]
