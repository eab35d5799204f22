"""Exports torchvision models (random weights, train mode) to ONNX in
training mode, next to a TorchScript archive of the same module with the same
weights, for the ONNX import parity test:

    /usr/bin/python3 export_onnx.py OUTDIR

writes OUTDIR/onnx/<name>.onnx and OUTDIR/onnx/<name>.ref.pt. The models use
different opsets so both forms of training-mode BatchNormalization are
imported: five outputs (opset 11) and training_mode=1 (opsets 14 and 17);
vit_b_16 (at 64x64, as in the scripted parity suite) brings LayerNormalization,
the Erf-based GELU, Softmax and MatMul attention at opset 17.
"""
import os
import sys
import warnings

IMAGE = 64

import torch
import torchvision
from torch.onnx import TrainingMode

MODELS = {"resnet18": 11, "mobilenet_v2": 14, "squeezenet1_0": 17, "vit_b_16": 17}
KWARGS = {"vit_b_16": {"image_size": IMAGE}}


def main():
    out = os.path.join(sys.argv[1], "onnx")
    os.makedirs(out, exist_ok=True)
    warnings.filterwarnings("ignore")
    for name, opset in MODELS.items():
        onnx_path = os.path.join(out, name + ".onnx")
        ref_path = os.path.join(out, name + ".ref.pt")
        if os.path.exists(onnx_path) and os.path.exists(ref_path):
            continue
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(**KWARGS.get(name, {}))
        model.train()
        x = torch.randn(2, 3, IMAGE, IMAGE)
        torch.onnx.export(model, x, onnx_path + ".tmp", training=TrainingMode.TRAINING,
                          do_constant_folding=False, opset_version=opset,
                          input_names=["x"], output_names=["logits"])
        # Scripted after the export: tracing runs the model once in train
        # mode, which moves its running statistics, and the ONNX file holds
        # the moved ones.
        torch.jit.script(model).save(ref_path + ".tmp")
        os.replace(ref_path + ".tmp", ref_path)
        os.replace(onnx_path + ".tmp", onnx_path)
        print("exported", name, "opset", opset, flush=True)


if __name__ == "__main__":
    main()
