# Writes a small scripted module for the lower-module tests:
#   python3 make_module.py KIND OUT.pt
# KIND is one of
#   net        conv (no bias), batch norm, a submodule with a linear layer and
#              a float attribute, in training mode
#   net-eval   the same module in eval mode
#   setattr    forward assigns an int attribute (self.calls += 1)
#   nested-setattr  the same assignment inside a submodule
#   dict-attr  forward reads a Dict[str, Tensor] attribute
#   containers forward reads Dict[str, str], List[str] and List[float]
#              attributes while iterating a ModuleDict, and builds its
#              result dict by item assignment (torchvision's
#              IntermediateLayerGetter and segmentation heads)
#   dict-write forward assigns an item of its Dict[str, int] attribute
#   no-rule    forward applies torch.cosh (no derivative rule) to an activation
import sys
from typing import Dict, List

import torch
from torch import nn


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = Head()
        self.scale: float = 0.5

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.nn.functional.adaptive_avg_pool2d(y, 1)
        return self.head(y) * self.scale


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls: int = 0

    def forward(self, x):
        self.calls = self.calls + 1
        return x * 2


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.counter = Counter()

    def forward(self, x):
        return self.counter(x) + 1


class DictAttr(nn.Module):
    def __init__(self):
        super().__init__()
        self.table: Dict[str, torch.Tensor] = {"a": torch.ones(2)}

    def forward(self, x):
        return x + self.table["a"]


class Containers(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleDict({"a": nn.Linear(5, 6), "b": nn.Linear(6, 6), "c": nn.Linear(6, 4)})
        self.return_layers: Dict[str, str] = {"a": "low", "c": "out"}
        self.scales: List[float] = [2.0, 0.5]
        self.order: List[str] = ["out", "low"]

    def forward(self, x) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            x = torch.tanh(layer(x))
            if name in self.return_layers:
                out[self.return_layers[name]] = x * self.scales[len(out)]
        result: Dict[str, torch.Tensor] = {}
        for key in self.order:
            result[key] = out[key]
        result["out"] = result["out"] + 1.0
        return result


class DictWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen: Dict[str, int] = {"calls": 0}

    def forward(self, x):
        self.seen["calls"] = 1
        return x * 2


class NoRule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cosh(self.fc(x))  # NO-RULE-LINE


def main():
    kind, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    if kind == "net":
        module = Net()
    elif kind == "net-eval":
        module = Net().eval()
    elif kind == "setattr":
        module = Counter()
    elif kind == "nested-setattr":
        module = Outer()
    elif kind == "dict-attr":
        module = DictAttr()
    elif kind == "containers":
        module = Containers()
    elif kind == "dict-write":
        module = DictWrite()
    elif kind == "no-rule":
        module = NoRule()
    else:
        sys.exit("unknown kind " + kind)
    torch.jit.script(module).save(out)


if __name__ == "__main__":
    main()
