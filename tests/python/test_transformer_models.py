"""Transformers people train, under PyTorch 2.x: HuggingFace GPT2LMHeadModel,
BertForMaskedLM and LlamaForCausalLM (small configs, random weights, no
download) and timm's vit_small_patch16_224 and deit_tiny_patch16_224,
exported (capture="export"); torchvision's vit_b_16 and swin_t scripted by
torch 2.x (capture="script"). ctest runs it in the build against the torch
2.x venv, whose transformers and timm scripts/install-deps.sh installs.

L0 is exact against eager autograd on a copy of the model (dropout on, both
sides from one seed): the output and every parameter gradient agree to rel
<= 1e-5, with every op differentiated by a rule (fallback=False)."""
import copy

import pytest
import torch
import torchvision

import actnn
from parity import max_rel

pytestmark = pytest.mark.skipif(not hasattr(torch, "export"), reason="needs PyTorch 2.x")
transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")


class Logits(torch.nn.Module):
    """A HuggingFace model as a module from token ids to logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).logits


def gpt2():
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, use_cache=False)
    return Logits(transformers.GPT2LMHeadModel(config)), (torch.randint(0, 128, (2, 16)),)


def bert():
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=128, max_position_embeddings=32)
    return Logits(transformers.BertForMaskedLM(config)), (torch.randint(0, 128, (2, 16)),)


def llama():
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, vocab_size=128,
                                      max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
                                      use_cache=False)
    return Logits(transformers.LlamaForCausalLM(config)), (torch.randint(0, 128, (2, 16)),)


def timm_model(name):
    def build():
        return timm.create_model(name, pretrained=False, num_classes=10, img_size=64), (torch.randn(2, 3, 64, 64),)
    return build


def vit_b_16():
    return torchvision.models.vit_b_16(image_size=64, num_classes=10), (torch.randn(2, 3, 64, 64),)


def swin_t():
    return torchvision.models.swin_t(num_classes=10), (torch.randn(2, 3, 64, 64),)


MODELS = [
    ("gpt2", gpt2, "export"),
    ("bert", bert, "export"),
    ("llama", llama, "export"),
    ("vit_small_patch16_224", timm_model("vit_small_patch16_224"), "export"),
    ("deit_tiny_patch16_224", timm_model("deit_tiny_patch16_224"), "export"),
    ("vit_b_16", vit_b_16, "script"),
    ("swin_t", swin_t, "script"),
]


@pytest.mark.parametrize("name,build,capture", MODELS, ids=[m[0] for m in MODELS])
def test_model_matches_eager_autograd_at_l0(name, build, capture):
    torch.manual_seed(0)
    model, inputs = build()
    model.train()
    eager = copy.deepcopy(model)
    compiled = actnn.compile(model, "L0", example_inputs=inputs, capture=capture, fallback=False)
    assert sorted(compiled.state_dict()) == sorted(model.state_dict())  # tied LM heads included
    torch.manual_seed(1)
    out_c = compiled(*inputs)
    torch.manual_seed(1)
    out_e = eager(*inputs)
    assert max_rel(out_c, out_e) <= 1e-5
    weights = torch.linspace(-1.0, 1.0, out_e.numel()).view_as(out_e)
    (out_c * weights).sum().backward()
    (out_e * weights).sum().backward()
    params = dict(eager.named_parameters())
    for pname, p in model.named_parameters():
        if params[pname].grad is None:
            assert p.grad is None or not p.grad.any(), pname
            continue
        assert p.grad is not None, pname
        assert max_rel(p.grad, params[pname].grad) <= 1e-5, pname
