"""Saved activations and step time of transformers at an actnn level against
PyTorch autograd, in one process (PyTorch 2.x with transformers installed:
the torch 2.x venv of scripts/install-deps.sh, and the package built or
installed):

    PYTHONPATH=build-torch2/python ~/.cache/actnn/torch2-venv/bin/python3 \\
        tools/studies/transformer_memory.py [--model gpt2-small|llama-4l] [--batch 8] [--seq 512]
        [--level L3] [--steps 0]

Models come from configs with random weights (nothing is downloaded):
gpt2-small is GPT-2's 124M configuration (12 layers, 768 wide, 12 heads);
llama-4l a Llama-style decoder of 4 layers, 768 wide, 12 heads, SwiGLU
3072, RMSNorm, rotary embeddings, 32000 tokens. Both are captured with
torch.export (actnn.compile(..., capture="export")).

Prints the saved-set report's breakdown by kind and producing op (a Markdown
table: bytes at full precision, as autograd would hold them, and as stored),
then with --steps N the median time of N training steps (forward, loss,
backward; the first step of each side is a warm-up and not counted) of the
compiled module and of the eager model, and their ratio. Timings are this
machine's; the table is exact for the shapes given.
"""
import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

import actnn


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).logits


def build(name):
    import transformers
    if name == "gpt2-small":
        config = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, use_cache=False)
        return Logits(transformers.GPT2LMHeadModel(config)), config.vocab_size
    if name == "llama-4l":
        config = transformers.LlamaConfig(num_hidden_layers=4, hidden_size=768, num_attention_heads=12,
                                          num_key_value_heads=12, intermediate_size=3072, vocab_size=32000,
                                          max_position_embeddings=2048, use_cache=False)
        return Logits(transformers.LlamaForCausalLM(config)), config.vocab_size
    raise SystemExit("unknown model %r (gpt2-small, llama-4l)" % name)


def step_times(module, params, ids, steps):
    times = []
    for _ in range(steps + 1):
        for p in params:
            p.grad = None
        start = time.perf_counter()
        logits = module(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--level", default="L3")
    ap.add_argument("--steps", type=int, default=0, help="timed training steps per side (0: memory only)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model, vocab = build(args.model)
    model.train()
    ids = torch.randint(0, vocab, (args.batch, args.seq))
    report = actnn.report(model, ids, args.level, capture="export")
    print("%s, batch %d, sequence %d, %s (torch %s): %s" % (args.model, args.batch, args.seq, args.level,
                                                            torch.__version__, str(report).splitlines()[0]))
    print(str(report).splitlines()[1])
    print(report.breakdown_table())
    if args.steps > 0:
        compiled = actnn.compile(model, args.level, example_inputs=ids, capture="export")
        params = list(model.parameters())
        actnn_s = step_times(compiled, params, ids, args.steps)
        eager_s = step_times(model, params, ids, args.steps)
        print("step time (median of %d): %s %.3f s, autograd %.3f s, ratio %.2fx"
              % (args.steps, args.level, actnn_s, eager_s, actnn_s / eager_s))


if __name__ == "__main__":
    main()
