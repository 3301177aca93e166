"""Architecture parameters (the structured K, L, M factors) versus model parameters."""

from __future__ import annotations

from torch import nn

from .ops.monarch import LinearMap, Monarch

ARCH_MODULES: tuple[type[nn.Module], ...] = (Monarch, LinearMap)


def arch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the structured transforms K, L, M of every XD layer in ``model``."""
    seen: set[int] = set()
    out = []
    for m in model.modules():
        if isinstance(m, ARCH_MODULES):
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def model_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every other parameter of ``model`` (kernels, biases, the rest of the network)."""
    arch = {id(p) for p in arch_parameters(model)}
    return [p for p in model.parameters() if id(p) not in arch]
