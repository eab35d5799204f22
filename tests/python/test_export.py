"""actnn.compile(model, example_inputs=..., capture="export"): torch.export's
programs translated into actnn (python/actnn/_export.py,
python/export_module.cpp). Needs PyTorch 2.x; ctest runs it in the build
against the torch 2.x venv.

L0 is exact: against eager autograd on a copy of the model (same weights,
same random stream for dropout and stochastic depth), the loss, every
parameter gradient (landing in the original model's parameters), the input
gradient and the batch-norm running statistics agree to rel <= 1e-5, at a
batch size other than the example's (the batch dimension is exported
dynamic), and so does the eval-mode output."""
import copy
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import actnn
from parity import max_rel, assert_grads_match

pytestmark = pytest.mark.skipif(not hasattr(torch, "export"), reason="torch.export needs PyTorch 2.x")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "convnext_tiny"])
def test_exported_torchvision_model_matches_eager_autograd_at_l0(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).train()
    eager = copy.deepcopy(model)
    compiled = actnn.compile(model, "L0", example_inputs=torch.randn(2, 3, 64, 64), capture="export")
    assert sorted(compiled.state_dict()) == sorted(model.state_dict())
    x = torch.randn(4, 3, 64, 64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(1)
    loss_c = F.cross_entropy(compiled(xa), torch.arange(4))
    torch.manual_seed(1)
    loss_e = F.cross_entropy(eager(xb), torch.arange(4))
    loss_c.backward()
    loss_e.backward()
    assert max_rel(loss_c.detach(), loss_e.detach()) <= 1e-5
    assert max_rel(xa.grad, xb.grad) <= 1e-5
    assert_grads_match(model, eager)
    buffers = dict(eager.named_buffers())
    for bname, b in model.named_buffers():
        assert max_rel(b, buffers[bname]) <= 1e-5, bname
    compiled.eval()
    eager.eval()
    with torch.no_grad():
        assert max_rel(compiled(x), eager(x)) <= 1e-5


class TwoHeads(nn.Module):
    """Batch norm, dropout, a view by the batch size, a dict output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        y = F.dropout(y, 0.1, self.training)
        return {"logits": self.fc(y.view(y.size(0), -1)), "features": y.mean((2, 3))}


def test_exported_module_trains_at_l3_and_saves():
    torch.manual_seed(0)
    model = TwoHeads().train()
    compiled = actnn.compile(model, example_inputs=torch.randn(2, 1, 28, 28), capture="export")  # L3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(compiled(x)["logits"], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert model.bn.num_batches_tracked.item() == 8
    compiled.eval()
    with torch.no_grad():
        before = compiled(x)["logits"]
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "actnn_test_export_%d.pt" % os.getpid())
    try:
        compiled.save(path)
        loaded = actnn.load(path)
    finally:
        if os.path.exists(path):
            os.remove(path)
    loaded.eval()
    with torch.no_grad():
        assert max_rel(loaded(x)["logits"], before) <= 1e-6


class AuxInTraining(nn.Module):
    """Returns a tuple in training and a tensor in eval (GoogLeNet's kind)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        if self.training:
            return y, y.sum(1)
        return y


def test_a_model_whose_output_type_depends_on_the_mode_trains_and_refuses_eval():
    model = AuxInTraining().train()
    compiled = actnn.compile(model, "L0", example_inputs=torch.randn(2, 4), capture="export")
    out, aux = compiled(torch.randn(3, 4))
    (out.sum() + aux.sum()).backward()
    assert model.fc.weight.grad is not None
    compiled.eval()
    with pytest.raises(torch.jit.Error, match="different types in train and eval mode"):
        compiled(torch.randn(3, 4))


class Erfcx(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.special.erfcx(self.fc(x))  # no derivative rule in actnn


def test_errors_name_the_op_and_the_models_source_line():
    model = Erfcx().train()
    with pytest.raises(actnn.CompileError) as info:
        actnn.compile(model, "L0", example_inputs=torch.randn(2, 4), capture="export", fallback=False)
    message = str(info.value)
    assert "erfcx" in message
    assert "test_export.py:%d" % (Erfcx.forward.__code__.co_firstlineno + 1) in message, message


class Moves(nn.Module):
    """to(device) as transformers' models write it (position_embeds.to(
    inputs_embeds.device)): torch.export records aten.to.dtype_layout."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x).to(x.device) * 2.0 + self.fc(x).to(device=x.device, dtype=x.dtype)


def test_moves_between_devices_have_rules():
    model = Moves().train()
    eager = copy.deepcopy(model)
    compiled = actnn.compile(model, "L0", example_inputs=torch.randn(2, 4), capture="export", fallback=False)
    x = torch.randn(3, 4)
    compiled(x).sum().backward()
    eager(x).sum().backward()
    assert max_rel(model.fc.weight.grad, eager.fc.weight.grad) <= 1e-6


class Conditional(nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (x,))


def test_what_cannot_be_translated_is_a_clear_error():
    with pytest.raises(actnn.CompileError, match="higher-order ops"):
        actnn.compile(Conditional(), "L0", example_inputs=torch.randn(2, 4), capture="export")
    with pytest.raises(ValueError, match="needs example_inputs"):
        actnn.compile(TwoHeads(), capture="export")
    with pytest.raises(ValueError, match="capture must be"):
        actnn.compile(TwoHeads(), example_inputs=torch.randn(2, 1, 28, 28), capture="trace")
    with pytest.raises(TypeError, match="takes an nn.Module"):
        actnn.compile(torch.jit.script(TwoHeads()), example_inputs=torch.randn(2, 1, 28, 28), capture="export")
