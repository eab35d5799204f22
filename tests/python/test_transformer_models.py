"""Transformers people train, under PyTorch 2.x: HuggingFace GPT2LMHeadModel,
BertForMaskedLM and LlamaForCausalLM (small configs, random weights, no
download) and timm's vit_small_patch16_224 and deit_tiny_patch16_224,
exported (capture="export"); torchvision's vit_b_16 and swin_t scripted by
torch 2.x (capture="script"). ctest runs it in the build against the torch
2.x venv, whose transformers and timm scripts/install-deps.sh installs.

L0 is exact against eager autograd on a copy of the model (dropout on, both
sides from one seed): the output and every parameter gradient agree to rel
<= 1e-5, with every op differentiated by a rule (fallback=False).

GPT-2, BERT, Llama, timm's ViT-S and torchvision's vit_b_16 also go through
ONNX as a user of torch.onnx.export would
(training mode, TorchScript exporter, dropout off so both sides are
deterministic): actnn-opt (ACTNN_OPT) imports and compiles the file at L0, and
the loaded archive matches eager autograd the same way (parameters by their
initializer names, which are the state_dict's; an initializer the exporter
named itself by its value)."""
import copy
import os
import subprocess

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


def gpt2_for_onnx():
    # torch.onnx.export (TorchScript) refuses aten::diff, which transformers'
    # mask code calls under use_cache=False or SDPA attention (Llama too).
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return Logits(transformers.GPT2LMHeadModel(config)), (torch.randint(0, 128, (2, 16)),)


def llama_for_onnx():
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, vocab_size=128,
                                      max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
                                      attn_implementation="eager")
    return Logits(transformers.LlamaForCausalLM(config)), (torch.randint(0, 128, (2, 16)),)


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


def backward_from_matching_outputs(out, eager_out):
    """The outputs agree to rel 1e-5; both then run backward from the same
    weighted sum (a different weight per element, so no gradient cancels)."""
    assert max_rel(out, eager_out) <= 1e-5
    weights = torch.linspace(-1.0, 1.0, eager_out.numel()).view_as(eager_out)
    (out * weights).sum().backward()
    (eager_out * weights).sum().backward()


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
    backward_from_matching_outputs(out_c, out_e)
    params = dict(eager.named_parameters())
    for pname, p in model.named_parameters():
        if params[pname].grad is None:
            assert p.grad is None or not p.grad.any(), pname
            continue
        assert p.grad is not None, pname
        assert max_rel(p.grad, params[pname].grad) <= 1e-5, pname


ONNX_MODELS = [
    ("gpt2", gpt2_for_onnx),
    ("bert", bert),
    ("llama", llama_for_onnx),
    ("vit_small_patch16_224", timm_model("vit_small_patch16_224")),
    ("vit_b_16", vit_b_16),
]


@pytest.mark.parametrize("name,build", ONNX_MODELS, ids=[m[0] for m in ONNX_MODELS])
def test_onnx_export_matches_eager_autograd_at_l0(name, build, tmp_path):
    pytest.importorskip("onnx")
    actnn_opt = os.environ.get("ACTNN_OPT")
    if not actnn_opt:
        pytest.skip("ACTNN_OPT (the actnn-opt binary) is not set")
    torch.manual_seed(0)
    model, inputs = build()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.train()
    path = str(tmp_path / (name + ".onnx"))
    torch.onnx.export(model, inputs, path, dynamo=False, opset_version=14, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.TRAINING)
    archive = str(tmp_path / (name + ".pt"))
    run = subprocess.run([actnn_opt, "--level=L0", "--emit=module", "-o", archive, path],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    imported = torch.jit.load(archive)
    imported.train()
    out_i = imported(*inputs)
    out_e = model(*inputs)
    backward_from_matching_outputs(out_i, out_e)
    eager = list(model.named_parameters())
    by_name = dict(eager)
    largest = max(q.grad.abs().max().item() for _, q in eager if q.grad is not None)
    matched = set()
    for pname, p in imported.named_parameters():
        if pname in by_name:
            ename, q = pname, by_name[pname]
            assert torch.equal(q.detach(), p.detach()), pname
        else:  # an initializer the exporter named itself
            same = [(n, q) for n, q in eager if q.shape == p.shape and torch.equal(q.detach(), p.detach())]
            assert len(same) == 1, "%s: %d eager parameters hold its value" % (pname, len(same))
            ename, q = same[0]
        matched.add(ename)
        assert p.grad is not None and q.grad is not None, pname
        # Relative to the parameter's own gradient, or to 1e-4 of the largest
        # where that is round-off (a key bias's gradient is 0 in exact arithmetic).
        scale = max(q.grad.abs().max().item(), 1e-4 * largest)
        assert (p.grad - q.grad).abs().max().item() <= 1e-5 * scale, "%s (%s)" % (pname, ename)
    unmatched = [n for n, q in eager if n not in matched and q.grad is not None and q.grad.any()]
    assert not unmatched, "parameters with a gradient the import lost: %s" % unmatched
