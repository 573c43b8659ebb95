"""Ownership watermarks for sequential targets (AOW, Zhang et al., CIKM 2024, arXiv 2407.21034;
key-based like GREW, arXiv 2604.23568): a secret key draws out-of-distribution item sequences
(:mod:`.spec`), the owner trains them into the target (:mod:`.embed`), and a black-box test
decides whether a suspect model carries them (:mod:`.verify`)."""

from raysteal.watermark.embed import watermarked_split
from raysteal.watermark.spec import WatermarkConfig, make_watermark_config, watermark_sequences
from raysteal.watermark.verify import DEFAULT_ALPHA, DEFAULT_K, Verification, poisson_binomial_sf, probe_pairs, verify_watermark

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_K",
    "Verification",
    "WatermarkConfig",
    "make_watermark_config",
    "poisson_binomial_sf",
    "probe_pairs",
    "verify_watermark",
    "watermark_sequences",
    "watermarked_split",
]
