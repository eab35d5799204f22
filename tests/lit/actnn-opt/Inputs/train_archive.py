# Loads an archive written by `actnn-opt --emit=module` next to the module it
# was compiled from, takes one training step with each on the same batch,
# and prints whether outputs, gradients and updated buffers agree:
#   python3 train_archive.py LIBACTNN_RUNTIME COMPILED.pt ORIGINAL.pt
import sys

import torch

lib, compiled_path, original_path = sys.argv[1:4]
torch.ops.load_library(lib)
compiled = torch.jit.load(compiled_path)
original = torch.jit.load(original_path)
print("loaded", compiled.original_name)

x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
y = compiled(x)
y_ref = original(x)
print("output", list(y.shape), "requires_grad", y.requires_grad,
      "matches", torch.allclose(y, y_ref, rtol=1e-5, atol=1e-6))
(y * y).sum().backward()
(y_ref * y_ref).sum().backward()
params = dict(original.named_parameters())
for name, p in compiled.named_parameters():
    ok = p.grad is not None and torch.allclose(p.grad, params[name].grad, rtol=1e-5, atol=1e-6)
    print("grad", name, "matches", ok)
buffers = dict(original.named_buffers())
for name, b in compiled.named_buffers():
    print("buffer", name, "matches", torch.equal(b, buffers[name]) or torch.allclose(b, buffers[name]))
