"""Evaluation chosen once per target kind: one :class:`Evaluation` for collaborative targets
(:data:`~raysteal.experiment.execute.COLLABORATIVE`), one for sequential targets
(:data:`~raysteal.experiment.execute_sequential.SEQUENTIAL`). Each holds how its runs are
measured: the results row, the per-epoch probe Ray Tune reports, the names of the metrics the
two report, and the columns every row of one deployed target shares. Drivers ask
:func:`evaluation_for` (a run) or :func:`evaluation_of` (prepared target data) once and never
branch on the target's kind themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from raysteal.experiment.context import SequentialRunData
from raysteal.experiment.execute import COLLABORATIVE
from raysteal.experiment.execute_sequential import SEQUENTIAL

if TYPE_CHECKING:
    from raysteal.experiment.run import Run


class Evaluation(Protocol):
    """How the runs against one kind of target are measured."""

    kind: str
    probe_metrics: tuple[str, ...]  # reported after every clone epoch (ASHA's signal) and at the end
    final_metrics: tuple[str, ...]  # numeric row columns reported once, when the run ends
    probe_user_cap: int | None  # the most users a per-epoch probe scores (None: Tune's probe_users)
    probe_scope: str  # which users the probe scores, in words (best.yaml's header)
    keeps_work: bool  # runs keep a scratch directory they resume from after a crash

    def execute(
        self,
        run: Run,
        data: Any,
        client: Any,
        *,
        device: str = "cpu",
        on_epoch=None,
        workdir: str | None = None,
        aux_cache: str | None = None,
    ) -> dict[str, Any]:
        """Run the attack and measure it: the run's results row."""
        ...

    def probe(self, run: Run, data: Any, device: str, max_users: int) -> Callable[[dict[str, Any]], dict[str, float]]:
        """The per-epoch probe: an epoch's stats (``model``: the clone in training, ...) -> :attr:`probe_metrics`."""
        ...

    def clone_name(self, run: Run) -> str:
        """The row's ``clone`` column for ``run`` (the clone's or the student's model)."""
        ...

    def cost_columns(self, spec: Any, data: Any, k: int) -> dict[str, float]:
        """The columns every row of this deployed target (behind ``spec.defenses``) and ``k`` shares."""
        ...


EVALUATIONS: dict[str, Evaluation] = {"collaborative": COLLABORATIVE, "sequential": SEQUENTIAL}
"""Target kind -> its evaluation."""


def evaluation_for(run: Run) -> Evaluation:
    """The evaluation of ``run``'s target kind."""
    return EVALUATIONS["sequential" if run.sequential else "collaborative"]


def evaluation_of(data: Any) -> Evaluation:
    """The evaluation of a prepared target (its ``RunData`` or ``SequentialRunData``)."""
    return EVALUATIONS["sequential" if isinstance(data, SequentialRunData) else "collaborative"]
