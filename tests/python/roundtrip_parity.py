"""L0 parity after a round trip through actnn-opt and Python: each model is
compiled with `actnn-opt --level=L0 --emit=module`, the archive is loaded in
Python after torch.ops.load_library, and one training step under Python
autograd (loss = sum(out * fixed random probe)) must give the loss, every
parameter gradient, the input gradients and the updated buffers of the
original module (relative error <= 1e-5). The compiled module's state_dict has
the original's keys and loads into it and back, and in eval mode it returns the
original's output. Run by ctest with Debian's /usr/bin/python3:

    roundtrip_parity.py LIBACTNN_RUNTIME ACTNN_OPT MODELS_DIR [NAME ...]

MODELS_DIR holds the archives of export_torchvision.py and export_small_nets.py.
Exits non-zero, naming each mismatch, if any check fails.
"""
import os
import subprocess
import sys
import tempfile

import torch

TOLERANCE = 1e-5
# name -> forward inputs when the model has no "<name>.inputs" spec
# (see export_small_nets.py for the format).
MODELS = {
    "resnet18": ["float 2x3x64x64"],
    "norm": None,              # batch norm buffers, an eval-mode submodule
    "dropout": None,           # the random stream
    "cross_entropy_nd": None,  # an integer target, a loss computed in forward
    "outputs": None,           # a tuple holding a list and a dict
}


class Failures:
    def __init__(self):
        self.messages = []

    def add(self, model, message):
        self.messages.append(f"{model}: {message}")
        print(f"FAIL {model}: {message}", flush=True)


def relative_error(actual, expected):
    if expected.numel() == 0:
        return 0.0
    a, e = actual.double(), expected.double()
    scale = e.abs().max().item()
    diff = (a - e).abs().max().item()
    return diff if scale == 0 else diff / scale


def make_inputs(models_dir, name, seed):
    lines = MODELS[name]
    if lines is None:
        with open(os.path.join(models_dir, name + ".inputs")) as f:
            lines = [line for line in f.read().splitlines() if line]
    torch.manual_seed(seed)
    inputs = []
    for line in lines:
        fields = line.split()
        shape = [int(d) for d in fields[1].split("x")]
        if fields[0] == "float":
            inputs.append(torch.randn(shape))
        else:
            inputs.append(torch.randint(0, int(fields[2]), shape, dtype=torch.long))
    return inputs


def tensors_of(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_of(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_of(v)]
    return []


def training_step(module, inputs, seed):
    """forward, loss = sum(out * probe), backward; what parity_util.cpp does."""
    xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    for p in module.parameters():
        p.grad = None
    torch.manual_seed(seed)
    outs = tensors_of(module(*xs))
    torch.manual_seed(seed + 1)
    loss = torch.zeros(())
    for o in outs:
        loss = loss + (o * torch.randn(o.shape, dtype=o.dtype)).sum()
    loss.backward()
    return {
        "loss": loss.detach(),
        "grads": {n: p.grad for n, p in module.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in module.named_buffers()},
        "input_grads": [x.grad for x in xs],
    }


def compare_steps(name, got, ref, failures, when):
    def check(what, a, e):
        if a is None and e is None:
            return
        if a is None or e is None:
            failures.add(name, f"{when}: {what}: " + ("no gradient" if a is None else "the original has none"))
            return
        if a.shape != e.shape:
            failures.add(name, f"{when}: {what}: shape {tuple(a.shape)}, original {tuple(e.shape)}")
            return
        err = relative_error(a, e)
        if not err <= TOLERANCE:
            failures.add(name, f"{when}: {what}: relative error {err:.3g} > {TOLERANCE}")

    check("loss", got["loss"], ref["loss"])
    for key in ("grads", "buffers"):
        if set(got[key]) != set(ref[key]):
            failures.add(name, f"{when}: {key} differ: {sorted(set(got[key]) ^ set(ref[key]))}")
        for n in ref[key]:
            if n in got[key]:
                check(f"{key[:-1]} {n}", got[key][n], ref[key][n])
    for i, (a, e) in enumerate(zip(got["input_grads"], ref["input_grads"])):
        check(f"grad input{i}", a, e)


def check_model(name, opt, models_dir, workdir, failures):
    source = os.path.join(models_dir, name + ".pt")
    if not os.path.exists(source):
        failures.add(name, f"{source} is missing (run tests/models/export_*.py)")
        return
    archive = os.path.join(workdir, name + ".actnn.pt")
    run = subprocess.run([opt, "--level=L0", "--emit=module", "-o", archive, source],
                         capture_output=True, text=True)
    if run.returncode != 0:
        failures.add(name, f"actnn-opt exited with {run.returncode}: {run.stderr.strip()}")
        return
    before = len(failures.messages)

    compiled, original = torch.jit.load(archive), torch.jit.load(source)
    inputs = make_inputs(models_dir, name, 0)
    compare_steps(name, training_step(compiled, inputs, 7), training_step(original, inputs, 7), failures,
                  "training step")

    # state_dict: same keys, loads both ways. The compiled module takes a
    # fresh original's weights (they differ from the trained ones), then the
    # next training step must match that original's again.
    keys, original_keys = list(compiled.state_dict()), list(original.state_dict())
    if keys != original_keys:
        failures.add(name, f"state_dict keys differ: {sorted(set(keys) ^ set(original_keys))} "
                           f"(or their order)")
    fresh = torch.jit.load(source)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(0.01 * torch.randn(p.shape))
    compiled.load_state_dict(fresh.state_dict())
    for n, t in compiled.state_dict().items():
        if not torch.equal(t, fresh.state_dict()[n]):
            failures.add(name, f"load_state_dict into the compiled module: {n} differs")
    inputs = make_inputs(models_dir, name, 1)
    compare_steps(name, training_step(compiled, inputs, 11), training_step(fresh, inputs, 11), failures,
                  "training step after load_state_dict")
    back = torch.jit.load(source)
    back.load_state_dict(compiled.state_dict())
    for n, t in back.state_dict().items():
        if not torch.equal(t, compiled.state_dict()[n]):
            failures.add(name, f"load_state_dict from the compiled module: {n} differs")

    # Eval mode runs the original forward.
    compiled, original = torch.jit.load(archive).eval(), torch.jit.load(source).eval()
    inputs = make_inputs(models_dir, name, 2)
    with torch.no_grad():  # same seed: a net may drop out even in eval mode
        torch.manual_seed(13)
        got = tensors_of(compiled(*inputs))
        torch.manual_seed(13)
        ref = tensors_of(original(*inputs))
    if len(got) != len(ref):
        failures.add(name, f"eval: {len(got)} outputs, original {len(ref)}")
    for i, (a, e) in enumerate(zip(got, ref)):
        err = relative_error(a, e)
        if a.shape != e.shape or not err <= TOLERANCE:
            failures.add(name, f"eval: output {i} differs (relative error {err:.3g})")

    if len(failures.messages) == before:
        print(f"ok   {name}", flush=True)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    lib, opt, models_dir = sys.argv[1:4]
    names = sys.argv[4:] or list(MODELS)
    torch.ops.load_library(lib)
    failures = Failures()
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            try:
                check_model(name, opt, models_dir, workdir, failures)
            except Exception as e:  # report every model, then fail
                failures.add(name, f"{type(e).__name__}: {e}")
    if failures.messages:
        print(f"{len(failures.messages)} mismatch(es) in {len(names)} models", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(names)} models match", flush=True)


if __name__ == "__main__":
    main()
