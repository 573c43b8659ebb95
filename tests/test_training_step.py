"""The one optimisation step every training loop shares (raysteal.training.step)."""

from __future__ import annotations

import torch

from raysteal.training.step import bf16_autocast, to_device, training_step


def _sgd_on_dot(grad_clip: float | None, returns_tuple: bool):
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    x = torch.tensor([3.0, 4.0])

    def forward():
        loss = weight @ x  # gradient = x, norm 5
        return (loss, {"part": loss.detach()}) if returns_tuple else loss

    out = training_step(optimizer, [weight], forward, device=torch.device("cpu"), amp=False, grad_clip=grad_clip)
    return weight.detach(), out


def test_step_descends_and_clips_the_gradient_norm():
    unclipped, _ = _sgd_on_dot(None, returns_tuple=False)
    assert torch.allclose(unclipped, torch.tensor([0.0, 0.0]))  # w - 1.0 * x
    clipped, _ = _sgd_on_dot(1.0, returns_tuple=False)
    assert torch.allclose(clipped, torch.tensor([2.4, 3.2]))  # w - x / |x|


def test_step_returns_what_forward_returned():
    _, out = _sgd_on_dot(None, returns_tuple=True)
    loss, parts = out
    assert float(loss.detach()) == 25.0 and float(parts["part"]) == 25.0


def test_amp_only_on_cuda_and_batches_move_whole():
    assert not bf16_autocast(True, torch.device("cpu"))
    assert not bf16_autocast(False, torch.device("cpu"))
    batch = {"inputs": torch.ones(2, 3), "targets": torch.zeros(2, dtype=torch.long)}
    moved = to_device(batch, torch.device("cpu"))
    assert moved.keys() == batch.keys() and all(torch.equal(moved[k], batch[k]) for k in batch)
