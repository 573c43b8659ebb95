"""Black-box extraction of sequential recommenders: DFME (Yue et al. 2021), BAHSD, and Zhu et
al.'s attacks on sequential targets (Table 8)."""

from raysteal.extraction.config import ExtractionConfigBase, make_extraction_config
from raysteal.extraction.registry import extraction_names, get_extraction, register_extraction
from raysteal.extraction.result import ExtractionResult, run_extraction
from raysteal.extraction.types import ExtractionSet, SequenceKnowledge, StudentBatch, StudentObjective

__all__ = [
    "ExtractionConfigBase",
    "ExtractionResult",
    "ExtractionSet",
    "SequenceKnowledge",
    "StudentBatch",
    "StudentObjective",
    "extraction_names",
    "get_extraction",
    "make_extraction_config",
    "register_extraction",
    "run_extraction",
]
