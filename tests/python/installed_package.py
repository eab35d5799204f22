"""The package as `pip install .` installs it, run from outside the checkout
(scripts/test.sh): import actnn loads the installed libactnn.so, compiles
torchvision's resnet18 at L3, and five SGD steps lower the loss; under
PyTorch 2.x the same through torch.export (capture="export")."""
import os

import torch
import torchvision

import actnn

assert os.path.dirname(actnn.library_path()) == os.path.join(os.path.dirname(actnn.__file__), "lib"), \
    "actnn loaded %s, not the installed library" % actnn.library_path()
def train(capture):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    compiled = actnn.compile(model, example_inputs=x[:2], capture=capture)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(compiled(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(lambda v: v == v, losses)) and losses[-1] < losses[0], losses
    print("installed actnn (%s, torch %s, capture=%s): L3 losses %s"
          % (actnn.library_path(), torch.__version__, capture, " ".join("%.3f" % v for v in losses)))


train("script")
if hasattr(torch, "export"):
    train("export")
