"""``raysteal verify``: does a suspect model descend from a watermarked target?

The suspect is queried only through the black-box top-k API every attack uses (an in-process
oracle over its checkpoint: ranked item ids, never scores or weights) with the watermark's
prefixes; the exact one-sided test of :mod:`raysteal.watermark.verify` gives the p-value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from raysteal.errors import ConfigError, DataFileError


def _watermark_spec(target: Path | None, key: int | None, sequences: int | None, length: int | None) -> tuple[dict[str, Any], int | None]:
    """The watermark mapping and the watermarked target's catalogue size (``None`` when unknown):
    from the owner's target checkpoint, else from ``--key`` (``--sequences`` / ``--length``
    override either)."""
    if (target is None) == (key is None):
        raise ConfigError("name the watermark: --target (the owner's watermarked checkpoint) or --key, not both")
    spec: dict[str, Any] = {"key": key}
    num_items = None
    if target is not None:
        from raysteal.training.checkpoint import read_checkpoint

        payload = read_checkpoint(target)
        saved = (payload.get("extra") or {}).get("watermark")
        if not saved:
            raise ConfigError(f"--target {target}: this checkpoint was trained without a watermark")
        spec = {k: saved[k] for k in ("key", "sequences", "length") if k in saved}
        num_items = int(payload["spec"]["num_items"])
    if sequences is not None:
        spec["sequences"] = sequences
    if length is not None:
        spec["length"] = length
    return spec, num_items


def _load_suspect(path: Path):
    """The suspect's model from its checkpoint; a file that is not one is a one-line ``DataFileError``
    (torch's own refusal of a foreign file spans many lines: only its first is kept)."""
    from raysteal.training.checkpoint import load_checkpoint

    try:
        model, _meta = load_checkpoint(path)
    except DataFileError as err:
        first = str(err).splitlines()[0]
        raise DataFileError(
            first if first == str(err) else f"checkpoint {path} is not a raysteal checkpoint (torch cannot read it)"
        ) from None
    return model


def register(app: typer.Typer) -> None:
    """Add ``verify`` to the top-level app."""

    @app.command("verify")
    def verify_cmd(
        suspect: Path = typer.Argument(..., help="the suspect model: a raysteal checkpoint (a target, or a clone saved by an attack)"),
        target: Path | None = typer.Option(
            None, "--target", help="the owner's watermarked target checkpoint (gives the watermark and catalogue)"
        ),
        key: int | None = typer.Option(None, "--key", help="the watermark's secret key (instead of --target)"),
        sequences: int | None = typer.Option(None, "--sequences", help="watermark sequences (default: the target's, else 8)"),
        length: int | None = typer.Option(None, "--length", help="items per watermark sequence (default: the target's, else 12)"),
        num_items: int | None = typer.Option(
            None, "--num-items", help="the watermarked target's catalogue size (checked against the suspect's)"
        ),
        k: int = typer.Option(10, "-k", "--k", help="length of the top-k lists asked"),
        min_prefix: int = typer.Option(1, "--min-prefix", help="shortest watermark prefix asked"),
        alpha: float = typer.Option(0.01, "--alpha", help="significance level of the decision"),
        decoys: int = typer.Option(0, "--decoys", help="also ask this many decoy watermarks (other keys): the empirical null hit rate"),
        device: str = typer.Option("cpu", "--device", help="where the suspect answers: cpu or cuda[:N]"),
        as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    ) -> None:
        """Test whether SUSPECT carries the watermark, through its black-box top-k lists only.

        Each watermark prefix is asked once; a hit is the watermark's next item in the top-k.
        H0 (the suspect does not descend from the watermarked target) gives each hit a probability
        of at most k / (items the key has not drawn yet), so the p-value is the exact
        Poisson-binomial tail, the probability of at least the observed hits (one-sided; AOW,
        arXiv 2407.21034). The suspect carries the watermark when p < alpha.
        """
        from raysteal.oracle import TargetSpec, in_process_oracle
        from raysteal.watermark import make_watermark_config, verify_watermark

        spec, target_items = _watermark_spec(target, key, sequences, length)
        config = make_watermark_config(spec)
        if num_items is not None and target_items is not None and num_items != target_items:
            raise ConfigError(f"--num-items {num_items}: the target {target} has {target_items} items")
        expected = num_items if num_items is not None else target_items
        model = _load_suspect(suspect)
        if not getattr(model, "sequential", False):
            raise ConfigError(
                f"suspect {suspect}: a {model.name!r} model is queried by user id, not by item sequence; "
                "the watermark can only be asked of a sequential recommender"
            )
        if expected is not None and model.num_items != expected:
            raise ConfigError(
                f"suspect {suspect}: its catalogue has {model.num_items} items, the watermarked target's {expected}; "
                "item ids would not correspond"
            )
        oracle = in_process_oracle(TargetSpec(model=model, name="suspect"), device=device)
        try:
            client = oracle.register_attacker("verifier")
            result = verify_watermark(client, config, k=k, min_prefix=min_prefix, alpha=alpha, decoys=decoys)
        finally:
            oracle.close()
        if as_json:
            typer.echo(json.dumps({"suspect": str(suspect), **result.as_dict()}, default=float))
            return
        verdict = "carries the watermark" if result.carries_watermark else "shows no evidence of the watermark"
        decoy = "" if result.decoy_hit_rate is None else f"; decoy keys' hit rate {result.decoy_hit_rate:.4f}"
        typer.echo(
            f"{suspect}: {result.hits}/{result.trials} watermark hits in top-{result.k} (hit rate {result.hit_rate:.4f}, "
            f"null rate <= {result.null_rate:.4f}{decoy}); p-value {result.p_value:.3g} -> {verdict} (alpha {alpha:g}); "
            f"{result.queries} queries"
        )
