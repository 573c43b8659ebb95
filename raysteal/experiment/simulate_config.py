"""Simulation files: many concurrent attackers against shared target servers.

.. code-block:: yaml

    experiment: many-attackers        # ... experiment keys: one dataset, one target ...
    attacks: [{attack: qsd, finetune_epochs: 3}]   # the attack mix, assigned round-robin
    defenses: [[], [{type: rate_limit, rate: 500, burst: 64}]]   # one server per setting
    budget: 100                        # default per-attacker budget (null: unlimited)
    simulation:
      attackers: 256
      budgets: [25, 50, 100]           # optional: attacker i gets budgets[i % len]
      cpus_per_attacker: 0.25          # fractional Ray CPUs per attacker task
      request_size: 16                 # users per request: an attacker's queries arrive as several requests
      seed: 0                          # attacker i draws its knowledge with seed + i
      benign:                          # optional: real users' traffic beside the attackers
        accounts: 1000                 # one account per real user replayed
        queries: 20                    # each replays the last 20 prefixes of its history, one query a request
        rate: 0.5                      # queries/s per account
        source: auxiliary              # whose histories: auxiliary (held out of the target's training) or target
      detection: {fpr: 0.01}           # the flagging threshold: this share of calibration benign accounts

Attacker ``i`` uses attack ``attacks[i % A]`` and server ``(i // A) % S`` (``A`` attacks, ``S``
defense settings: every attack meets every server) and its own seed ``seed + i`` (its known users, queried users and clone initialisation), so every
attacker has its own knowledge and budget. Parsed by popping ``simulation`` and passing the rest
to :func:`~raysteal.experiment.config.parse_experiment`; ``seeds`` and ``grid`` do not apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError
from raysteal.experiment.config import ExperimentConfig, format_validation, parse_experiment, read_config_file
from raysteal.experiment.run import Run, expand_runs


class BenignTraffic(NumbersAreNotBooleans):
    """Real users' histories replayed through the same API beside the attackers (accounts named
    ``benign-<i>``): each account is one real user, asking for recommendations after each of the
    last ``queries`` interactions of its history (the prefixes ending there, oldest first) at
    ``rate`` queries/s; a collaborative target is asked for the user's own id each time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: int = Field(ge=1, description="benign accounts, one real user each")
    queries: int = Field(20, ge=1, description="queries per account: the prefixes ending at its last `queries` interactions")
    rate: float = Field(0.5, gt=0, description="queries per second per account")
    source: Literal["auxiliary", "target"] = Field(
        "auxiliary",
        description="auxiliary: users held out of the target's training (the split's user-disjoint half); "
        "target: the target's own users (a target trained on every user)",
    )
    drivers: int = Field(1, ge=1, description="Ray tasks sending the benign requests")
    cpus_per_driver: float = Field(0.25, gt=0, description="Ray CPUs per driver task")
    seed: int = Field(0, ge=0, description="which users are replayed and when each starts")


class DetectionSettings(NumbersAreNotBooleans):
    """Query-log detection after the run (:mod:`raysteal.detection`); needs benign traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fpr: float = Field(0.01, gt=0, lt=1, description="share of calibration benign accounts the threshold flags")


class SimulationSettings(NumbersAreNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attackers: int = Field(ge=1, description="number of concurrent attackers")
    budgets: list[int] | None = Field(None, min_length=1, description="per-attacker budgets, cycled (default: the experiment's budget)")
    cpus_per_attacker: float = Field(0.25, gt=0, description="Ray CPUs per attacker task (fractional)")
    gpus_per_attacker: float | None = Field(None, ge=0, description="GPUs per attacker (None: 1/16 of a GPU when the cluster has GPUs)")
    request_size: int = Field(64, ge=1, description="users per request")
    rate_limit_patience_s: float = Field(120.0, ge=0, description="how long an attacker keeps retrying rate-limited requests")
    seed: int = Field(0, ge=0, description="attacker i uses seed + i")
    benign: BenignTraffic | None = Field(None, description="real users' traffic beside the attackers")
    detection: DetectionSettings | None = Field(None, description="score every account from the query log (needs benign)")


class SimulationConfig(BaseModel):
    """A validated simulation file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    experiment: ExperimentConfig
    simulation: SimulationSettings

    @property
    def name(self) -> str:
        return self.experiment.experiment

    def attacker_runs(self) -> list[Run]:
        """One run per attacker (attack, server/defenses, budget, seed) in attacker order; each
        carries ``simulation: {name, attacker, server}`` (so its run id is unique)."""
        cells = expand_runs(self.experiment, seeds=1)  # attacks x defenses, attack-major
        attacks, defenses = len(self.experiment.attacks), len(self.experiment.defenses)
        sim = self.simulation
        runs = []
        for i in range(sim.attackers):
            a, d = i % attacks, (i // attacks) % defenses
            budget = cells[a * defenses + d].budget if sim.budgets is None else int(sim.budgets[i % len(sim.budgets)])
            role = {"name": self.name, "attacker": i, "server": d}
            runs.append(cells[a * defenses + d].replace(seed=sim.seed + i, budget=budget, simulation=role))
        return runs


def parse_simulation(raw: dict[str, Any], source: str = "simulation file", attackers: int | None = None) -> SimulationConfig:
    """Validate a simulation mapping (see the module docstring); ``attackers`` overrides the count."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a simulation file must be a mapping of keys")
    raw = dict(raw)
    sim_raw = raw.pop("simulation", None)
    if not isinstance(sim_raw, dict):
        raise ConfigError(f"{source}: simulation: a simulation file needs a 'simulation' mapping (attackers, budgets, ...)")
    for key in ("seeds", "only_seeds", "grid"):
        if key in raw:
            raise ConfigError(f"{source}: {key}: does not apply to a simulation (attackers are seeded from their index: simulation.seed)")
    if attackers is not None:
        if isinstance(attackers, bool) or not isinstance(attackers, int) or attackers < 1:
            raise ConfigError(f"--attackers must be an integer >= 1, got {attackers!r}")
        sim_raw = {**sim_raw, "attackers": attackers}
    try:
        settings = SimulationSettings(**sim_raw)
    except ValidationError as err:
        raise ConfigError(format_validation(err, source).replace(f"{source}: ", f"{source}: simulation.", 1)) from None
    if settings.detection is not None and (settings.benign is None or settings.benign.accounts < 4):
        raise ConfigError(
            f"{source}: simulation.detection: needs simulation.benign with at least 4 accounts "
            "(half calibrate the detector, half are scored beside the attackers)"
        )
    if settings.budgets is not None and any(b < 0 for b in settings.budgets):
        raise ConfigError(f"{source}: simulation.budgets: budgets must be >= 0, got {settings.budgets}")
    experiment = parse_experiment({**raw, "seeds": 1}, source=source, repeats_allowed=True)  # a repeat weights the mix
    if len(experiment.datasets) != 1 or len(experiment.targets) != 1:
        raise ConfigError(f"{source}: a simulation deploys one target: give exactly one dataset and one target")
    if settings.budgets is not None and 0 in settings.budgets:
        querying = [run.attack_name for run in expand_runs(experiment, seeds=1) if run.query_width is not None]
        if querying:
            raise ConfigError(
                f"{source}: simulation.budgets: a budget of 0 leaves {querying[0]!r} no query to make "
                "(it learns from the black box's answers)"
            )
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.oracle.defenses import RateLimitSpec, parse_defenses

    for i, defense in enumerate(experiment.defenses):
        for spec in parse_defenses(defense):
            if isinstance(spec, RateLimitSpec) and spec.burst < settings.request_size:
                raise ConfigError(
                    f"{source}: simulation.request_size: {settings.request_size} exceeds the burst ({spec.burst}) of defenses.{i}'s rate limit; "
                    "no request could ever be admitted"
                )
    return SimulationConfig(experiment=experiment, simulation=settings)


def load_simulation(path: str | Path, attackers: int | None = None) -> SimulationConfig:
    """Read and validate a simulation file (YAML or JSON)."""
    raw = read_config_file(path, "simulation")
    return parse_simulation(raw, source=str(path), attackers=attackers)
