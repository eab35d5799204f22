"""The bundled example model: a small ResNet for 28x28 grey images (Fashion-
MNIST), scripted with random weights in train mode. Run with Debian's
/usr/bin/python3 (which has python3-torch):

    /usr/bin/python3 examples/fashion_mnist_model.py OUTDIR [fashion_resnet]

writes OUTDIR/fashion_resnet.pt. Three stages of basic residual blocks (16,
32, 64 channels at 28, 14, 7 pixels), batch norm and ReLU, global average
pooling and a linear classifier: every kind of saved value actnn compresses
(convolution and batch-norm inputs, ReLU masks, a block input read by two
convolutions) in a model that trains in minutes on two cores.
"""
import os
import sys

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.down(x))


class FashionResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(x.mean([2, 3]), 1))


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or ["fashion_resnet"]
    os.makedirs(out, exist_ok=True)
    for name in names:
        if name != "fashion_resnet":
            sys.exit(f"fashion_mnist_model.py: unknown model '{name}' (models: fashion_resnet)")
        torch.manual_seed(0)
        path = os.path.join(out, name + ".pt")
        torch.jit.script(FashionResNet().train()).save(path + ".tmp")
        os.replace(path + ".tmp", path)
        print("scripted", name, flush=True)


if __name__ == "__main__":
    main()
