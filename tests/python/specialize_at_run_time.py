"""Run-time specialization from Python: a module whose forward pads its
activation to a multiple of 4 when the width is not one (Swin's padding to the
window size) is compiled by actnn-opt twice — without input shapes (the branch
runs under the autograd fallback: its pad widths are computed from sizes) and
ahead of time for 2x3x7x7 — and the
archives are loaded in fresh Python processes:

- with libactnn.so (the compiler with the runtime): every archive trains with
  2x3x7x7 and 2x3x8x8 inputs, gradients equal to the original's under Python
  autograd (relative error <= 1e-5), and torch.ops.actnn.specializations
  names the signatures it compiled, none keeping the branch or the fallback;
- with libactnn_runtime.so alone: the fallback-compiled archive trains with
  both sizes as compiled (with one warning saying what is missing), the
  ahead-of-time one trains with 7x7 and refuses 8x8 naming both signatures.

The same for torchvision's swin_t (MODELS_DIR, from export_torchvision.py)
compiled at L0 without input shapes — its window padding and shifts are
size-dependent branches, differentiated per branch or under the fallback —
with 64x64 and 96x96 inputs: gradients equal to the original's in both
processes.

Run by ctest with Debian's /usr/bin/python3:

    specialize_at_run_time.py LIBACTNN LIBACTNN_RUNTIME ACTNN_OPT MODELS_DIR
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import torch

from roundtrip_parity import Failures, compare_steps, training_step


class ShapeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.scale = torch.nn.Parameter(torch.randn(4))

    def forward(self, x):
        y = self.conv(x)
        if y.size(-1) % 4 != 0:
            y = torch.nn.functional.pad(y, [0, 4 - y.size(-1) % 4])
        return torch.tanh(y) * self.scale.view(1, 4, 1, 1)


def check_parity(failures, name, archive, source, size):
    compiled, original = torch.jit.load(archive), torch.jit.load(source)
    torch.manual_seed(size)
    inputs = [torch.randn(2, 3, size, size)]
    compare_steps(name, training_step(compiled, inputs, 3), training_step(original, inputs, 3), failures,
                  f"{size}x{size}")
    return compiled


def swin_both_sizes(workdir, failures):
    source = os.path.join(workdir, "swin_t.pt")
    for size in (64, 96):
        check_parity(failures, "swin_t", os.path.join(workdir, "swin_t.l0.pt"), source, size)


def with_compiler(workdir, failures):
    source = os.path.join(workdir, "shape_net.pt")
    for name in ("generic", "aot"):
        archive = os.path.join(workdir, name + ".pt")
        module = torch.jit.load(archive)
        for size in (7, 8, 7):
            torch.manual_seed(size)
            inputs = [torch.randn(2, 3, size, size)]
            original = torch.jit.load(source)
            compare_steps(name, training_step(module, inputs, 3), training_step(original, inputs, 3), failures,
                          f"with the compiler, {size}x{size}")
        signatures, fallback_ops, branch_ops = torch.ops.actnn.specializations(module._c)
        expected = ["x:2x3x7x7:float32", "x:2x3x8x8:float32"] if name == "generic" else ["x:2x3x8x8:float32"]
        if list(signatures) != expected or any(fallback_ops) or any(branch_ops):
            failures.add(name, f"specializations {list(signatures)} with fallback ops {list(fallback_ops)} and "
                               f"branches {list(branch_ops)}, expected {expected} with neither")
    swin_both_sizes(workdir, failures)


def runtime_only(workdir, failures):
    source = os.path.join(workdir, "shape_net.pt")
    generic = os.path.join(workdir, "generic.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for size in (7, 8):
            module = check_parity(failures, "generic", generic, source, size)
    said = [str(w.message) for w in caught if "compiler is not loaded" in str(w.message)]
    if not said:
        failures.add("generic", "no warning that the compiler is not loaded")
    signatures, _, _ = torch.ops.actnn.specializations(module._c)
    if list(signatures):
        failures.add("generic", f"specialized without the compiler: {list(signatures)}")

    aot = os.path.join(workdir, "aot.pt")
    check_parity(failures, "aot", aot, source, 7)
    module = torch.jit.load(aot)
    try:
        module(torch.randn(2, 3, 8, 8))
        failures.add("aot", "an 8x8 input was accepted without the compiler")
    except RuntimeError as e:
        expected = ("this module was specialized to x:2x3x7x7:float32 (specialize-shapes) and is called with "
                    "x:2x3x8x8:float32; the actnn compiler, which would specialize it again, is not loaded")
        if expected not in str(e):
            failures.add("aot", f"8x8 without the compiler: unexpected error: {e}")
    swin_both_sizes(workdir, failures)


def main():
    if len(sys.argv) == 4 and sys.argv[1] in ("compiler", "runtime"):
        mode, lib, workdir = sys.argv[1:]
        torch.ops.load_library(lib)
        failures = Failures()
        (with_compiler if mode == "compiler" else runtime_only)(workdir, failures)
        sys.exit(1 if failures.messages else 0)
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    libactnn, runtime, opt, models_dir = sys.argv[1:]
    with tempfile.TemporaryDirectory() as workdir:
        shutil.copy(os.path.join(models_dir, "swin_t.pt"), workdir)
        run = subprocess.run([opt, "--level=L0", "--emit=module", "-o", os.path.join(workdir, "swin_t.l0.pt"),
                              os.path.join(workdir, "swin_t.pt")], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"actnn-opt (swin_t) exited with {run.returncode}: {run.stderr}")
        torch.manual_seed(0)
        source = os.path.join(workdir, "shape_net.pt")
        torch.jit.script(ShapeNet()).save(source)
        for name, extra in (("generic", []), ("aot", ["--input-shape=x:2x3x7x7"])):
            run = subprocess.run([opt, "--level=L0", "--emit=module", "-o", os.path.join(workdir, name + ".pt"),
                                  source] + extra, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"actnn-opt ({name}) exited with {run.returncode}: {run.stderr}")
        # Each in its own process: a loaded library cannot be unloaded.
        failed = False
        for mode, lib in (("compiler", libactnn), ("runtime", runtime)):
            run = subprocess.run([sys.executable, __file__, mode, lib, workdir])
            print(f"{'ok  ' if run.returncode == 0 else 'FAIL'} {mode}", flush=True)
            failed |= run.returncode != 0
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
