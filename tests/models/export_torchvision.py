"""Scripts torchvision classification and segmentation models (random weights) into
TorchScript archives for the gradient-parity tests (the small nets that
exercise each derivative rule are export_small_nets.py's). Run with Debian's
/usr/bin/python3 (which has python3-torch and python3-torchvision):

    /usr/bin/python3 export_torchvision.py OUTDIR [NAME ...]
"""
import os
import sys

import torch
import torchvision

TORCHVISION = [
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "densenet121",
    "vgg11_bn", "squeezenet1_0", "efficientnet_b0", "regnet_x_400mf",
    "shufflenet_v2_x0_5", "mnasnet0_5", "convnext_tiny", "vit_b_16",
    "swin_t",  # branches on its input's sizes (window padding): compiled with input shapes
    # torchvision.models.segmentation (dict results; compiled with input shapes)
    "fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
    # one member per family not covered above (the zoo, tests/zoo/zoo.py, runs all 92)
    "alexnet", "googlenet", "swin_v2_t", "r3d_18",
    # resnet18 with an einsum classifier, which runs under the autograd
    # fallback (no rule): the fallback's step-time benchmark (actnn-bench step)
    "resnet18_einsum",
]
SEGMENTATION = {"fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"}
VIDEO = {"r3d_18"}


# Constructor arguments that keep a test step cheap on a 2-core machine
# without changing the architecture: ViT-B/16 at 64x64 has 16 patches (its
# position embedding is sized for them) but the same 12 encoder layers.
# Segmentation models: no pretrained backbone (nothing may be downloaded), 5
# classes, no auxiliary head.
KWARGS = {"vit_b_16": {"image_size": 64}}
for _name in SEGMENTATION:
    KWARGS[_name] = {"weights": None, "weights_backbone": None, "num_classes": 5, "aux_loss": False}


class EinsumHeadResNet(torchvision.models.ResNet):
    """resnet18 whose classifier is written with torch.einsum, an op actnn has
    no derivative rule for: it runs under LibTorch autograd inside the
    compiled step (the autograd fallback)."""

    def __init__(self):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return torch.einsum("nc,kc->nk", x, self.fc.weight) + self.fc.bias


CUSTOM = {"resnet18_einsum": EinsumHeadResNet}


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or TORCHVISION
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name in names:
        path = os.path.join(out, name + ".pt")
        if os.path.exists(path):
            continue
        family = (torchvision.models.segmentation if name in SEGMENTATION else
                  torchvision.models.video if name in VIDEO else torchvision.models)
        model = CUSTOM[name]() if name in CUSTOM else getattr(family, name)(**KWARGS.get(name, {}))
        model.train()
        torch.jit.script(model).save(path + ".tmp")
        os.replace(path + ".tmp", path)
        print("scripted", name, flush=True)


if __name__ == "__main__":
    main()
