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


def test_adamw_is_fused_for_float32_cpu_parameters_and_steps_as_torch_default_does():
    from raysteal.training.step import adamw

    torch.manual_seed(0)
    start = [torch.randn(50, 8), torch.randn(30, 8)]
    results = []
    for make in (
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False),
        lambda ps: adamw(ps, lr=1e-2, weight_decay=0.1),
    ):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = make(params)
        for step in range(20):
            for p in params:
                p.grad = torch.sin(p.detach() * (step + 1))
            optimizer.step()
        results.append(params)
    fused = adamw([torch.nn.Parameter(start[0].clone())], lr=1e-2)
    assert fused.defaults["fused"] is True
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*results))
    double = adamw([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], lr=1e-2)
    assert not double.defaults.get("fused")  # torch's default where the kernel does not apply
    groups = adamw([{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 1e-3}], lr=1e-2)
    assert groups.defaults["fused"] is True and groups.param_groups[0]["lr"] == 1e-3
