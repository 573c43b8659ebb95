"""Joining a Ray cluster by address: an address nothing answers at is refused in seconds."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raysteal.distributed.runtime import check_reachable
from raysteal.errors import ConfigError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_address_nothing_answers_at_is_refused_naming_it():
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=rf"no Ray cluster answers at {address} .*ray start --head"):
            check_reachable(address)
    with pytest.raises(ConfigError, match="is not host:port"):
        check_reachable("127.0.0.1")
    with socket.socket() as listening:  # something answers: accepted
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"127.0.0.1:{listening.getsockname()[1]}")


def test_raysteal_run_with_an_unreachable_address_fails_fast_in_one_line(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "experiment: unreachable\nseeds: 1\ndatasets: [{name: synthetic}]\ntargets: [{model: bpr}]\nattacks: [{attack: popularity}]\n"
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("raysteal")),
            "run",
            str(exp),
            "--out",
            str(tmp_path / "out"),
            "--address",
            f"127.0.0.1:{_closed_port()}",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0  # ray.init on its own would retry for ~2 minutes: past the 120 s timeout above
    assert "no Ray cluster answers at 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr
