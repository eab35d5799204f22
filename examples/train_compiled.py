"""Train a module rewritten by actnn-opt from Python, under ordinary Python
autograd: load the runtime library, torch.jit.load the archive, and run a
usual training loop. Its saved activations are stored compressed.

    build/bin/actnn-opt --level=L3 --emit=module -o resnet.l3.pt resnet.pt
    /usr/bin/python3 examples/train_compiled.py build/lib/libactnn_runtime.so resnet.l3.pt [STEPS]

The archive must take 1x28x28 images with 10 classes (the bundled
examples/fashion_mnist_model.py). Exits 1 when the loss does not go down.
"""
import gzip
import struct
import sys

import torch

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    rank = magic & 0xFF
    shape = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return torch.frombuffer(bytearray(data[4 + 4 * rank:]), dtype=torch.uint8).reshape(shape)


def main():
    library, archive = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    torch.ops.load_library(library)
    model = torch.jit.load(archive)
    model.train()
    images = (read_idx(f"{DATA}/train-images-idx3-ubyte.gz")[:steps * 64].float() / 255 - 0.2860) / 0.3530
    labels = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz")[:steps * 64].long()

    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        x = images[step * 64:(step + 1) * 64].unsqueeze(1)
        y = labels[step * 64:(step + 1) * 64]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {loss.item():.4f}")

    if hasattr(model, "_actnn_state"):
        state = model._actnn_state
        budgets = state.site_budgets()
        print(f"{len(budgets)} compressed activations, {state.steps()} steps, "
              f"average site budget {sum(budgets) / len(budgets):.2f} bits")
    window = max(1, min(10, steps // 3))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"loss {first:.4f} -> {last:.4f}")
    if not last < first:
        sys.exit("train_compiled.py: the loss did not go down")


if __name__ == "__main__":
    main()
