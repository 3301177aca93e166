"""One XD layer as the report shows it: shape, geometry, spectrum, kernel, factors and harden's choice.

A :class:`LayerView` is built once per layer and then only read: by the figures, the document and
``report.json`` (whose per-layer keys :meth:`LayerView.to_json` keeps stable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..ops.geometry import AxisGeometry
from ..ops.graph import XDGraphConv
from ..records import HardenRecord
from .factors import Factor, graph_factors, xd_factors
from .kernel import Kernel, graph_kernel, xd_kernel
from .spectrum import Spectrum, graph_spectrum, xd_spectrum

NO_FACTORS_NOTE = "arch='fixed': K and M are the plain DFT pair\n(no learnable factors)"


@dataclass
class GraphGeometry:
    nodes: int


@dataclass
class LayerView:
    name: str
    type: str
    spatial_dims: int  # 0 for a graph layer
    in_channels: int
    out_channels: int
    groups: int
    arch: str
    origin: str  # what relax built the layer from
    geometry: list[AxisGeometry] | list[GraphGeometry]
    summary: str  # one line: dimensions, origin, channels, transform size
    spectrum: Spectrum
    kernel: Kernel
    factors: list[Factor]
    decision: HardenRecord  # what harden chose for the layer, and the runner-up
    figure: str  # path of the layer's PNG inside the report folder
    notes: list[str] = field(default_factory=list)

    @property
    def max_distance(self) -> float | None:
        return max((f.distance for f in self.factors), default=None)

    def to_json(self) -> dict:
        return {
            "name": self.name, "notes": self.notes, "type": self.type, "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels, "out_channels": self.out_channels, "groups": self.groups,
            "arch": self.arch, "origin": self.origin, "geometry": [asdict(g) for g in self.geometry],
            "summary": self.summary, "spectrum": self.spectrum.to_json(), "kernel": self.kernel.to_json(),
            "factors": [asdict(f) for f in self.factors], **asdict(self.decision), "figure": self.figure,
        }


def layer_view(name: str, layer: nn.Module, record, weight: torch.Tensor | None, origin: str, figure: str) -> LayerView:
    """The view of ``layer``; ``weight`` is the conv taps fed to a layer relaxed from a functional conv."""
    if isinstance(layer, XDGraphConv):
        return _graph_view(name, layer, record, origin, figure)
    notes = []
    if layer.external_weight and weight is None:
        weight = layer.growth.new_zeros(layer.out_channels, layer.in_channels // layer.groups,
                                        *(g.kernel for g in layer.geometry))
        notes.append("the conv weight is computed at run time and was not captured (pass "
                     "example_inputs): spectrum and kernel show the learned growth only")
    with torch.no_grad():
        spec = layer.spectrum(weight).detach()
    geometry = list(layer.geometry)
    summary = (f"{layer.spatial_dims}-d {origin}, {layer.in_channels}->{layer.out_channels}"
               + (f" groups={layer.groups}" if layer.groups > 1 else "") + ", n=" + "x".join(str(g.n) for g in geometry))
    return LayerView(name, "XDConv", layer.spatial_dims, layer.in_channels, layer.out_channels, layer.groups,
                     layer.arch, origin, geometry, summary, xd_spectrum(layer, spec), xd_kernel(layer, spec),
                     xd_factors(layer), record, figure, notes)


def _graph_view(name: str, layer: XDGraphConv, record, origin: str, figure: str) -> LayerView:
    eigenvalues, eigenvectors = torch.linalg.eigh(layer.propagation.detach().double().cpu())
    with torch.no_grad():
        spec = layer.spectrum().detach()
    c_out, c_in, _ = layer.weight.shape
    summary = f"graph conv, {layer.nodes} nodes, {c_in}->{c_out}" + (" depthwise" if layer.depthwise else "")
    return LayerView(name, "XDGraphConv", 0, int(c_in), int(c_out), 1, layer.arch, origin,
                     [GraphGeometry(layer.nodes)], summary, graph_spectrum(spec, eigenvalues.numpy()),
                     graph_kernel(layer.weight), graph_factors(layer, eigenvalues, eigenvectors),
                     record, figure)
