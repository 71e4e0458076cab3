"""Teacher and student merged into one trunk of grouped convolutions ("twin"): each layer runs once for both
networks, halving the kernel launches that dominate small-batch GPU latency. Channels [0, C) of every
feature map are the teacher's, [C, 2C) the student's. Exact up to floating-point reassociation."""
from __future__ import annotations

import torch
from torch import fx, nn

from edge_stpm.training.model import InspectionPipeline, head

STATELESS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d, nn.Identity, nn.Dropout)


def _merge_conv(a: nn.Conv2d, b: nn.Conv2d, shared_input: bool) -> nn.Conv2d:
    groups = a.groups if shared_input else 2 * a.groups
    if shared_input and a.groups != 1:
        raise ValueError("the first convolution of a twin trunk must be ungrouped")
    conv = nn.Conv2d(a.in_channels if shared_input else 2 * a.in_channels, 2 * a.out_channels, a.kernel_size,
                     a.stride, a.padding, a.dilation, groups, bias=a.bias is not None or b.bias is not None,
                     padding_mode=a.padding_mode)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([a.weight, b.weight], 0))
        if conv.bias is not None:
            za = a.bias if a.bias is not None else torch.zeros(a.out_channels)
            zb = b.bias if b.bias is not None else torch.zeros(b.out_channels)
            conv.bias.copy_(torch.cat([za, zb], 0))
    return conv


def twin_trunk(teacher: nn.Module, student: nn.Module) -> fx.GraphModule:
    """Merge two trunks of identical structure (batch norm already folded) into one grouped-conv graph."""
    gt = teacher if isinstance(teacher, fx.GraphModule) else fx.symbolic_trace(teacher)
    gs = student if isinstance(student, fx.GraphModule) else fx.symbolic_trace(student)
    mods_t, mods_s = dict(gt.named_modules()), dict(gs.named_modules())
    placeholder = next(n for n in gt.graph.nodes if n.op == "placeholder")
    root: dict[str, nn.Module] = {}
    for node in gt.graph.nodes:
        if node.op != "call_module":
            continue
        a, b = mods_t[node.target], mods_s[node.target]
        if isinstance(a, nn.Conv2d):
            root[node.target] = _merge_conv(a, b, shared_input=node.args[0] is placeholder)
        elif isinstance(a, STATELESS):
            root[node.target] = a
        else:
            raise ValueError(f"cannot merge layer {node.target} ({type(a).__name__}) into a twin trunk")
    return fx.GraphModule(root, gt.graph)


class TwinPipeline(nn.Module):
    """InspectionPipeline with one twin trunk; same inputs and outputs."""

    def __init__(self, pipe: InspectionPipeline, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.preprocess = pipe.preprocess
        self.smooth = pipe.smooth
        self.score_k = pipe.score_k
        self.level_weights = pipe.level_weights
        self.twin = twin_trunk(pipe.teacher, pipe.student)
        self.channels = tuple(channels)
        self.image_size = pipe.image_size
        self.trunk_dtype = pipe.trunk_dtype

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_normalised(self.preprocess(x))

    def from_normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.twin(x.to(self.trunk_dtype))
        t = [f[:, :c] for f, c in zip(feats, self.channels)]
        s = [f[:, c:] for f, c in zip(feats, self.channels)]
        return head(t, s, self.image_size, self.smooth, self.score_k, self.level_weights)
