"""The actnn runtime from Python: load the library, compress a tensor, use the
packed class inside TorchScript, and save / load a module that holds one.

    /usr/bin/python3 examples/python_ops.py build/lib/libactnn_runtime.so
"""
import io
import sys

import torch

torch.ops.load_library(sys.argv[1] if len(sys.argv) > 1 else "build/lib/libactnn_runtime.so")

x = torch.randn(16, 64, 28, 28)
packed = torch.ops.actnn.quantize(x, [2], 256, 7, 0)
restored = torch.ops.actnn.dequantize(packed)
print(f"2-bit: {packed.original_nbytes()} -> {packed.nbytes()} bytes "
      f"({packed.original_nbytes() / packed.nbytes():.1f}x), "
      f"max |error| {(restored - x).abs().max().item():.3f}")
assert restored.shape == x.shape and restored.dtype == x.dtype


@torch.jit.script
def roundtrip(t: torch.Tensor, bits: int) -> torch.Tensor:
    p = torch.ops.actnn.quantize(t, [bits], 256, 1, 0)
    return torch.ops.actnn.dequantize(p, t.shape, t.dtype)


assert torch.equal(roundtrip(x, 8), roundtrip(x, 8))  # same seed, same bytes


class Holder(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self) -> torch.Tensor:
        return torch.ops.actnn.dequantize(self.p)


module = torch.jit.script(Holder(packed))
buf = io.BytesIO()
torch.jit.save(module, buf)
buf.seek(0)
loaded = torch.jit.load(buf)
assert torch.equal(loaded(), restored), "a saved PackedActivation must load unchanged"

# Bad input is reported with the argument and value.
try:
    torch.ops.actnn.quantize(x, [3], 256, 0, 0)
except RuntimeError as e:
    assert "bits must be 1, 2, 4 or 8, got 3" in str(e), e
else:
    raise AssertionError("bits=3 was accepted")
print("ok")
