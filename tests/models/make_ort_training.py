"""Generates ONNX Runtime training artifacts for the ONNX training-graph
rewrite (passes/onnx/insert_quantize.cpp): small nets exported from torch in
training mode, then onnxruntime.training.artifacts.generate_artifacts with a
cross-entropy loss. Each net lands in OUTDIR/<name>/training_model.onnx (with
eval_model.onnx, optimizer_model.onnx and checkpoint next to it).

    cnn  Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d -> Conv2d -> ReLU -> Linear
    mlp  Linear -> ReLU -> Linear -> Tanh -> Linear, 512 wide

Needs torch and onnxruntime-training (1.19), e.g. in a venv made from Debian's
python3 so that it sees python3-torch:

    /usr/bin/python3 -m venv --system-site-packages VENV
    VENV/bin/pip install 'onnxruntime-training==1.19.*' onnx 'numpy<2'
    VENV/bin/python make_ort_training.py OUTDIR [NAME ...]

Exits with status 2 when onnxruntime.training is not importable, so that
callers can skip rather than fail.
"""
import io
import os
import sys

import torch
import torch.nn as nn

try:
    import onnx
    from onnxruntime.training import artifacts
except ImportError as e:
    print(f"make_ort_training.py: {e}; skipping", file=sys.stderr)
    sys.exit(2)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        return self.fc(torch.flatten(torch.relu(self.conv2(x)), 1))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc3 = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


NETS = {"cnn": (Cnn, (4, 3, 16, 16)), "mlp": (Mlp, (4, 64))}


def generate(name, outdir):
    net_class, input_shape = NETS[name]
    torch.manual_seed(0)
    net = net_class().train()
    buf = io.BytesIO()
    torch.onnx.export(net, torch.randn(*input_shape), buf, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, opset_version=17)
    directory = os.path.join(outdir, name)
    os.makedirs(directory, exist_ok=True)
    artifacts.generate_artifacts(onnx.load_from_string(buf.getvalue()),
                                 requires_grad=[n for n, _ in net.named_parameters()],
                                 loss=artifacts.LossType.CrossEntropyLoss, optimizer=artifacts.OptimType.AdamW,
                                 artifact_directory=directory)
    print(os.path.join(directory, "training_model.onnx"))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[2:] or NETS:
        generate(name, sys.argv[1])


if __name__ == "__main__":
    main()
