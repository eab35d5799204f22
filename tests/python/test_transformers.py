"""Our transformer nets (tests/models/export_small_nets.py: GptBlock,
LlamaBlock, BertBlock) through the Python package, under the torch of the
interpreter that runs it: scripted (both torches; under PyTorch 2.x the nets
call F.scaled_dot_product_attention and F.rms_norm, which canonicalize
decomposes) and, under PyTorch 2.x, exported (capture="export").

L0 is exact against eager autograd on a copy (loss, every parameter
gradient, rel <= 1e-5; dropout from the same seed). L3 trains: eight SGD
steps on one batch lower the loss, and the report's saved set is at least
5x smaller than autograd's (at width 16 the per-group metadata is a large
share; the 128-wide GPT-style nets of the README reach 14.7x)."""
import copy
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import actnn
from parity import max_rel, assert_grads_match

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import export_small_nets as nets  # noqa: E402

CAPTURES = ["script"] + (["export"] if hasattr(torch, "export") else [])
NETS = ["gpt_block", "llama_block", "bert_block"]


def make(name, batch=2):
    cls, specs = nets.NETS[name]
    torch.manual_seed(sum(map(ord, name)))
    model = cls().train()
    inputs = tuple(torch.randint(0, spec[2], (batch,) + tuple(spec[1][1:])) for spec in specs)
    return model, inputs


def loss_of(logits, ids):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids.reshape(-1))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("name", NETS)
def test_transformer_net_matches_eager_autograd_at_l0(name, capture):
    model, inputs = make(name)
    eager = copy.deepcopy(model)
    compiled = actnn.compile(model, "L0", example_inputs=inputs, capture=capture)
    torch.manual_seed(3)
    loss_c = loss_of(compiled(*inputs), inputs[0])
    torch.manual_seed(3)
    loss_e = loss_of(eager(*inputs), inputs[0])
    loss_c.backward()
    loss_e.backward()
    assert max_rel(loss_c.detach(), loss_e.detach()) <= 1e-5
    assert_grads_match(model, eager)


@pytest.mark.parametrize("name", NETS)
def test_transformer_net_trains_at_l3(name):
    model, inputs = make(name, batch=8)
    capture = CAPTURES[-1]
    report = actnn.report(model, inputs, "L3", capture=capture)
    assert report.ratio >= 5.0, str(report)
    compiled = actnn.compile(model, "L3", example_inputs=inputs, capture=capture)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(8):
        loss = loss_of(compiled(*inputs), inputs[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
