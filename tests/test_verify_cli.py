"""`raysteal verify` (and `raysteal train-target --watermark-*`) through the command line: the
verdicts and p-values it prints, and its one-line errors on bad input."""

from __future__ import annotations

import json
import sys

import pytest
from model_fixtures import small_config
from typer.testing import CliRunner
from watermark_fixtures import MARK, NUM_ITEMS, log, trained

from raysteal.cli import app
from raysteal.training import save_checkpoint, seeded_model

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The owner's watermarked target (its watermark in the checkpoint), a clean SASRec of
    another seed, a BPR model and a file that is no checkpoint."""
    root = tmp_path_factory.mktemp("verify")
    marked, metrics = trained(0, True)
    save_checkpoint(root / "marked.pt", marked, fingerprint=log().fingerprint(), metrics=metrics, extra={"watermark": MARK})
    clean, _ = trained(1, False)
    save_checkpoint(root / "clean.pt", clean, fingerprint=log().fingerprint())
    save_checkpoint(root / "bpr.pt", seeded_model(small_config("bpr"), 10, NUM_ITEMS, seed=0))
    (root / "notes.txt").write_text("not a model\n")
    return root


def _error(monkeypatch, capsys, *args: str) -> str:
    """The console entry point on ``args``: exit status 2 and the one line it printed."""
    from raysteal.cli import main

    monkeypatch.setattr(sys, "argv", ["raysteal", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_verify_help():
    result = runner.invoke(app, ["verify", "--help"])
    assert result.exit_code == 0
    assert "--target" in result.output and "--key" in result.output and "p < alpha" in result.output


def test_the_watermarked_target_carries_its_watermark(checkpoints):
    result = runner.invoke(app, ["verify", str(checkpoints / "marked.pt"), "--target", str(checkpoints / "marked.pt"), "-k", "5"])
    assert result.exit_code == 0, result.output
    assert "carries the watermark" in result.output and "/21 watermark hits in top-5" in result.output
    out = runner.invoke(
        app, ["verify", str(checkpoints / "marked.pt"), "--key", "1234", "--sequences", "3", "--length", "8", "-k", "5", "--json"]
    )
    payload = json.loads(out.output)
    assert payload["carries_watermark"] and payload["p_value"] < 1e-15 and payload["trials"] == 21 and payload["queries"] == 21


def test_an_independent_model_shows_no_watermark(checkpoints):
    result = runner.invoke(
        app, ["verify", str(checkpoints / "clean.pt"), "--target", str(checkpoints / "marked.pt"), "-k", "5", "--decoys", "1", "--json"]
    )
    payload = json.loads(result.output)
    assert not payload["carries_watermark"] and payload["p_value"] > 0.05 and payload["queries"] == 42
    assert payload["decoy_hit_rate"] is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (["{marked}", "--key", "-1"], "error: watermark: key: Input should be greater than or equal to 0"),
        (["{marked}", "--key", "1", "--length", "2"], "error: watermark: length: Input should be greater than or equal to 3"),
        (["{marked}"], "name the watermark: --target (the owner's watermarked checkpoint) or --key, not both"),
        (["{marked}", "--key", "1", "--target", "{marked}"], "or --key, not both"),
        (["{marked}", "--target", "{clean}"], "this checkpoint was trained without a watermark"),
        (["{notes}", "--key", "1"], "notes.txt is not a raysteal checkpoint"),
        (["{missing}", "--key", "1"], "missing.pt does not exist"),
        (["{bpr}", "--key", "1"], "a 'bpr' model is queried by user id, not by item sequence"),
        (["{clean}", "--target", "{marked}", "--num-items", "50"], "--num-items 50: the target"),
        (["{clean}", "--key", "1234", "--num-items", "3706"], "its catalogue has 100 items, the watermarked target's 3706"),
        (["{clean}", "--key", "1", "-k", "0"], "k must lie in 1..99"),
        (["{clean}", "--key", "1", "--alpha", "1.5"], "alpha must lie in (0, 1)"),
        (["{clean}", "--key", "1", "--min-prefix", "12"], "min_prefix must lie in 1..11"),
    ],
)
def test_bad_input_is_one_clear_line(checkpoints, monkeypatch, capsys, args, message):
    paths = {name: str(checkpoints / f"{name}.pt") for name in ("marked", "clean", "bpr", "missing")}
    paths["notes"] = str(checkpoints / "notes.txt")
    err = _error(monkeypatch, capsys, "verify", *(a.format(**paths) for a in args))
    assert message in err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "sasrec", "--watermark-key", "1", "--watermark-copies", "0"],
            "watermark: copies: Input should be greater than or equal to 1",
        ),
        (["--model", "sasrec", "--watermark-key", "-5"], "watermark: key: Input should be greater than or equal to 0"),
        (["--model", "bpr", "--watermark-key", "1"], "watermark: 'bpr' is not a sequential model"),
    ],
)
def test_train_target_refuses_a_bad_watermark_before_reading_data(tmp_path, monkeypatch, capsys, args, message):
    err = _error(
        monkeypatch,
        capsys,
        "train-target",
        "--dataset",
        "ml-100k",
        "--data-dir",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "out"),
        *args,
    )
    assert message in err
