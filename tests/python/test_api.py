"""The Python package (python/actnn): actnn.compile, actnn.report, actnn.load
and their errors, against the torch of the interpreter that runs it (ctest
runs it under Debian's python3 with the build tree's package on PYTHONPATH,
and under the torch 2.x venv against that build).

L0 is exact: the compiled module's loss, parameter gradients (landing in the
original model's parameters), input gradient and batch-norm running
statistics equal eager autograd's on a copy of the model."""
import copy
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import actnn
from parity import max_rel, assert_grads_match


def small_resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).train()


def test_compile_at_l0_matches_eager_autograd():
    model = small_resnet()
    eager = copy.deepcopy(model)
    compiled = actnn.compile(model, level="L0")
    x = torch.randn(4, 3, 32, 32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_c = F.cross_entropy(compiled(xa), torch.arange(4))
    loss_e = F.cross_entropy(eager(xb), torch.arange(4))
    loss_c.backward()
    loss_e.backward()
    assert max_rel(loss_c.detach(), loss_e.detach()) <= 1e-5
    assert max_rel(xa.grad, xb.grad) <= 1e-5
    assert_grads_match(model, eager)  # the gradients land in the original model
    buffers = dict(eager.named_buffers())
    for name, b in model.named_buffers():
        if b.is_floating_point():
            assert max_rel(b, buffers[name]) <= 1e-5, name


def test_compiled_module_shares_the_parameters_and_trains_at_l3():
    model = small_resnet()
    compiled = actnn.compile(model)  # L3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(compiled(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    # The optimizer stepped the model's parameters, and the compiled module sees them.
    assert torch.equal(dict(compiled.named_parameters())["fc.weight"], model.fc.weight)


def test_save_and_load_round_trip(tmp_path):
    model = small_resnet()
    compiled = actnn.compile(model, level="L0")
    path = os.path.join(tmp_path, "resnet18.actnn.pt")
    compiled.save(path)
    loaded = actnn.load(path)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    a = compiled(x)
    torch.manual_seed(3)
    b = loaded(x)
    assert torch.equal(a, b)
    b.sum().backward()
    assert loaded.fc.weight.grad is not None
    # An archive path compiles too (here: the compiled archive's original is not
    # needed; a plain scripted archive).
    plain = os.path.join(tmp_path, "plain.pt")
    torch.jit.script(small_resnet()).save(plain)
    assert isinstance(actnn.compile(plain, level="L2"), torch.jit.ScriptModule)


@pytest.mark.parametrize("level", ["L0", "L3", "L5"])
def test_training_saved_mid_run_resumes_bit_for_bit(tmp_path, level):
    """Module + Adam state saved after 3 steps and loaded again train steps 4-6
    exactly like the run that went on (the L3 statistics and step count travel
    with the module; torch.manual_seed per step seeds quantization)."""
    torch.manual_seed(5)
    batches = [(torch.randn(8, 3, 32, 32) * (1 + i % 3), torch.randint(0, 10, (8,))) for i in range(6)]

    def train(module, optimizer, steps):
        for i in steps:
            torch.manual_seed(100 + i)
            loss = F.cross_entropy(module(batches[i][0]), batches[i][1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    straight = small_resnet()
    compiled = actnn.compile(straight, level=level)
    opt = torch.optim.Adam(straight.parameters(), lr=1e-3)
    train(compiled, opt, range(6))

    first = small_resnet()
    compiled = actnn.compile(first, level=level)
    opt = torch.optim.Adam(first.parameters(), lr=1e-3)
    train(compiled, opt, range(3))
    path = os.path.join(tmp_path, "mid_run.pt")
    compiled.save(path)
    opt_state = copy.deepcopy(opt.state_dict())

    resumed = actnn.load(path)
    opt = torch.optim.Adam(resumed.parameters(), lr=1e-3)
    opt.load_state_dict(opt_state)
    train(resumed, opt, range(3, 6))
    expected = dict(straight.named_parameters())
    for name, p in resumed.named_parameters():
        assert torch.equal(p, expected[name]), name


def test_load_refuses_an_archive_with_a_short_tensor_record(tmp_path):
    import zipfile
    good = os.path.join(tmp_path, "good.pt")
    actnn.compile(small_resnet(), level="L3").save(good)
    bad = os.path.join(tmp_path, "short.pt")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zout:
        largest = max((i for i in zin.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, data[: len(data) // 2] if info.filename == largest.filename else data)
    with pytest.raises(ValueError, match=r"short\.pt: the archive is malformed: record data/\d+ holds \d+ bytes"):
        actnn.load(bad)
    assert isinstance(actnn.load(good), torch.jit.ScriptModule)


def test_report_lists_the_saved_set():
    model = small_resnet()
    x = torch.randn(8, 3, 32, 32)
    r = actnn.report(model, x, level="L3")
    assert isinstance(r, actnn.Report)
    assert r.fallback_ops == 0 and r.rule_ops > 50
    kinds = {v.kind for v in r.values}
    assert {"activation", "mask", "held"} <= kinds
    assert r.full_bytes == sum(v.full_bytes for v in r.values)
    assert r.stored_bytes == sum(v.stored_bytes for v in r.values)
    assert r.ratio > 8
    conv_input = next(v for v in r.values if v.kind == "activation")
    assert conv_input.shape and conv_input.stored_bytes < conv_input.full_bytes
    text = str(r)
    assert text.startswith("saved set: %d values" % len(r.values))
    assert "activation" in text
    l0 = actnn.report(model, x, level="L0")
    assert l0.ratio == pytest.approx(1.0)
    # The model was not touched (the report compiles a copy).
    assert model.fc.weight.grad is None


class DataDependentNet(nn.Module):
    """A Python-only construct (a generator expression over modules with
    `getattr`) TorchScript cannot compile; tracing with example inputs can."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        layers = [getattr(self, n) for n in ("a", "b")]
        return layers[1](torch.relu(layers[0](x)))


def test_unscriptable_module_needs_example_inputs():
    net = DataDependentNet()
    with pytest.raises(actnn.CompileError, match=r"DataDependentNet cannot be scripted .*pass example_inputs"):
        actnn.compile(net)
    x = torch.randn(5, 6)
    compiled = actnn.compile(net, level="L0", example_inputs=x)
    out = compiled(x)
    out.sum().backward()
    reference = copy.deepcopy(net)
    for p in reference.parameters():
        p.grad = None
    reference(x).sum().backward()
    assert max_rel(net.a.weight.grad, reference.a.weight.grad) <= 1e-5


def test_bad_arguments_are_clear_errors(tmp_path):
    model = small_resnet()
    with pytest.raises(ValueError, match=r"level must be one of L0, L1, L2, L3, L4, L5, got 'L9'"):
        actnn.compile(model, level="L9")
    with pytest.raises(TypeError, match=r"expects an nn.Module, a torch.jit.ScriptModule or an archive path, got int"):
        actnn.compile(42)
    with pytest.raises(FileNotFoundError, match=r"no archive at"):
        actnn.compile(os.path.join(tmp_path, "missing.pt"))
    with pytest.raises(actnn.CompileError, match=r"input_shapes: .*'3y2' in 'x:3y2' is not a dimension"):
        actnn.compile(model, input_shapes="x:3y2")
    with pytest.raises(actnn.CompileError, match=r"unknown pass|no pass|not a pass"):
        actnn.compile(model, passes="lower-module,no-such-pass")
    with pytest.raises(ValueError, match=r"needs example_inputs"):
        actnn.report(model, None)
    with pytest.raises(ValueError, match=r"takes 1 inputs \(x\), got 2"):
        actnn.report(model, (torch.randn(1, 3, 8, 8), torch.randn(1)))


class NoRule(nn.Module):
    def forward(self, x):
        return torch.special.erfcx(x).sum()


def test_strict_mode_names_the_op_and_source_line():
    with pytest.raises(actnn.CompileError, match=r"aten::special_erfcx") as info:
        actnn.compile(NoRule(), level="L0", fallback=False)
    assert "test_api.py" in str(info.value)
    # With the fallback (the default) it compiles, and its gradient is autograd's.
    compiled = actnn.compile(NoRule(), level="L0")
    x = torch.randn(7, requires_grad=True)
    compiled(x).backward()
    y = x.detach().clone().requires_grad_()
    torch.special.erfcx(y).sum().backward()
    assert max_rel(x.grad, y.grad) <= 1e-6


def test_report_breakdown_adds_up():
    model = small_resnet()
    report = actnn.report(model, torch.randn(4, 3, 32, 32), "L3")
    rows = report.breakdown()
    assert sum(r[2] for r in rows) == len(report.values)
    assert sum(r[3] for r in rows) == report.full_bytes
    assert sum(r[4] for r in rows) == report.stored_bytes
    assert ("activation", "aten::relu") in {(r[0], r[1]) for r in rows}
    assert report.breakdown_table().splitlines()[-1].startswith("| all |")
