"""Muon for conv filters, as airbench94_muon.py trains them (KellerJordan/cifar10-airbench, after Keller
Jordan's Muon): the same Nesterov momentum as SGD, but each filter bank's update, seen as a
[c_out, c_in * k * k] matrix, is replaced by a near-orthogonal matrix of the same shape, so every direction
of the bank moves by about the same amount however uneven the gradient's spectrum. The filters are rescaled
to norm sqrt(c_out) before each step: batch norm follows every conv, so their scale changes nothing the net
computes, and a fixed scale keeps the step's relative size fixed (airbench's Muon has no weight decay).

torch.optim.Muon (torch >= 2.9) takes 2-D parameters only and has no rescaling, hence this one. Parameters
that are not 4-D (biases, batch-norm shifts, the linear head) take plain Nesterov SGD steps with weight
decay, as torch.optim.SGD(nesterov=True) does, so one optimizer serves the whole net and the loop, its
schedule, checkpoints and lookahead stay as they are.
"""
import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # airbench's quintic: the steepest slope at zero that still converges


def orthogonalize(g, steps=3):
    """A matrix U S' V^T near U V^T (g = U S V^T), S' between about 0.5 and 1.5 (airbench: as good as U V^T),
    by `steps` Newton-Schulz iterations of matrix products only. In fp32: airbench runs them in bf16 on a GPU,
    which a CPU without native bf16 only emulates."""
    a, b, c = NS_COEFFICIENTS
    x = g / (g.norm() + 1e-7)  # every singular value <= 1, where the iteration converges
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T  # x @ x.T on the short side: the smaller product
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Muon on 4-D parameters (conv filters) at `muon_lr` and `muon_momentum`, Nesterov SGD on the rest at
    each group's lr, momentum and weight decay. Group lrs are what a scheduler scales: the filters are a group
    of their own (make_groups)."""

    def __init__(self, params, lr, momentum, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, orthogonal=False))

    @staticmethod
    def make_groups(params, lr, momentum):
        """params (a list of tensors or of groups) with their 4-D tensors moved to one Muon group."""
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        filters = [p for g in groups for p in g["params"] if p.dim() == 4]
        rest = [{**g, "params": [p for p in g["params"] if p.dim() != 4]} for g in groups]
        return [g for g in rest if g["params"]] + [
            {"params": filters, "lr": lr, "momentum": momentum, "weight_decay": 0.0, "orthogonal": True}]

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if not wd else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()  # as SGD: the first step's buffer is its gradient
                else:
                    state["momentum_buffer"].mul_(m).add_(g)
                d = g.add(state["momentum_buffer"], alpha=m)  # Nesterov
                if group["orthogonal"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    d = orthogonalize(d.reshape(len(d), -1)).view_as(p)
                p.add_(d, alpha=-lr)
