"""Training quality on a transformer: a GPT-style byte-level language model
trained at full precision and at actnn levels, same initial weights and same
batches, and the training-loss curves side by side.

    PYTHONPATH=build/python /usr/bin/python3 tools/studies/gpt_bytes.py \\
        [--levels fp,L2,L3] [--steps 1000] [--layers 6] [--dim 384] [--heads 6] \\
        [--batch 8] [--seq 128] [--out build/figures]

(or the torch 2.x venv's python with PYTHONPATH=build-torch2/python).

Corpus: the Python standard library's top-level modules as Debian ships them
(/usr/lib/python3.11/*.py, packages libpython3.11-minimal and
libpython3.11-stdlib), concatenated in name order, as bytes (vocabulary 256);
the last 5% is held out. Model: pre-norm decoder blocks (causal attention,
GELU MLP, LayerNorm), learned positions, LM head tied to the byte embedding;
AdamW (lr 1e-3, cosine decay, weight decay 0.1), gradient clipping at 1.0.
A level may also be NAME=PIPELINE (actnn-opt --passes, for ablations; ';'
separates levels then): --levels "L3-nodebias=lower-module,...,insert-compression{bits=2,mixed=true},reuse-buffers".
Writes OUT/gpt_bytes.jsonl (one line per 10 steps and level: the mean
training loss of those steps; a summary line per level with the mean of the
last 100 steps and the held-out loss) and OUT/gpt_bytes.png (gnuplot).
"""
import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import actnn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, d = x.size(0), x.size(1), x.size(2)
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.view(b, t, self.heads, -1).transpose(1, 2)
        k = k.view(b, t, self.heads, -1).transpose(1, 2)
        v = v.view(b, t, self.heads, -1).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        keep = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        attn = torch.softmax(scores.masked_fill(keep.logical_not(), float("-inf")), -1)
        a = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, seq: int):
        super().__init__()
        self.tok = nn.Embedding(256, dim)
        self.pos = nn.Embedding(seq, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.size(1), device=ids.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.tok.weight)


def corpus():
    files = sorted(glob.glob("/usr/lib/python3.11/*.py"))
    if not files:
        raise SystemExit("gpt_bytes: no /usr/lib/python3.11/*.py (Debian's libpython3.11-stdlib)")
    data = b"".join(open(f, "rb").read() for f in files)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), len(files)


def batches(data, steps, batch, seq, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=g)
        yield torch.stack([data[s:s + seq + 1] for s in starts.tolist()])


def loss_of(model, window):
    logits = model(window[:, :-1])
    return F.cross_entropy(logits.reshape(-1, 256), window[:, 1:].reshape(-1))


def optimizer(model, lr, steps):
    """AdamW (weight decay 0.1 on matrices) and its schedule: 50 warm-up
    steps, then cosine decay to 0 at `steps`."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    return opt, sched


def train(level, args, train_data, held_out, out):
    torch.manual_seed(0)
    model = Gpt(args.layers, args.dim, args.heads, args.seq).train()
    if "=" in level:  # name=pipeline: an explicit actnn-opt pipeline (ablations)
        level, pipeline = level.split("=", 1)
        step_module = actnn.compile(model, passes=pipeline)
    else:
        step_module = model if level == "fp" else actnn.compile(model, level)
    opt, sched = optimizer(model, args.lr, args.steps)
    losses, start = [], time.time()
    torch.manual_seed(1)
    for step, window in enumerate(batches(train_data, args.steps, args.batch, args.seq, seed=2), 1):
        loss = loss_of(step_module, window)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 10 == 0:
            row = {"curve": True, "level": level, "step": step, "train_loss": sum(losses[-10:]) / 10}
            out.write(json.dumps(row) + "\n")
            out.flush()
        if step % 100 == 0:
            print("%s step %d: loss %.4f (%.1f s)" % (level, step, sum(losses[-100:]) / 100, time.time() - start),
                  flush=True)
    model.eval()
    with torch.no_grad():
        held = sum(loss_of(model, w).item() for w in batches(held_out, 20, args.batch, args.seq, seed=3)) / 20
    tail = losses[-100:]
    summary = {"summary": True, "level": level, "steps": args.steps, "final_train_loss": sum(tail) / len(tail),
               "held_out_loss": held, "seconds": round(time.time() - start, 1)}
    out.write(json.dumps(summary) + "\n")
    out.flush()
    print(json.dumps(summary), flush=True)
    return summary


def plot(jsonl, png, levels):
    rows = [json.loads(l) for l in open(jsonl) if l.startswith('{"curve"')]
    table = png + ".dat"
    with open(table, "w") as f:
        for level in levels:
            f.write("# %s\n" % level)
            for r in rows:
                if r["level"] == level:
                    f.write("%d %.6f\n" % (r["step"], r["train_loss"]))
            f.write("\n\n")
    plots = ", ".join("'%s' index %d using 1:2 with lines lw 2 title '%s'" % (table, i, level)
                      for i, level in enumerate(levels))
    script = ("set terminal pngcairo size 900,540; set output '%s'; set xlabel 'step'; "
              "set ylabel 'training loss (bytes, nats)'; set grid; set key top right; "
              "set title 'GPT-style byte LM: full precision vs actnn'; plot %s" % (png, plots))
    subprocess.run(["gnuplot", "-e", script], check=True)
    os.remove(table)


def add_model_arguments(ap):
    """The model's shape, the batch, the learning rate and the output folder
    (shared with gradient_noise.py, whose checkpoint must match this study)."""
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="build/figures")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="fp,L2,L3")
    ap.add_argument("--steps", type=int, default=1000)
    add_model_arguments(ap)
    args = ap.parse_args()
    if not shutil.which("gnuplot"):  # checked before training, not after an hour of it
        raise SystemExit("gpt_bytes: gnuplot draws OUT/gpt_bytes.png and is not installed "
                         "(bash scripts/install-deps.sh gnuplot-nox)")
    data, files = corpus()
    split = int(data.numel() * 0.95)
    print("corpus: %d bytes from %d files of /usr/lib/python3.11" % (data.numel(), files), flush=True)
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "gpt_bytes.jsonl")
    levels = args.levels.split(";" if "=" in args.levels else ",")
    with open(jsonl, "w") as out:
        summaries = [train(level, args, data[:split], data[split:], out) for level in levels]
    base = summaries[0]["final_train_loss"]
    for s in summaries[1:]:
        print("%s: final training loss %.4f vs %s %.4f (%+.2f%%)" % (
            s["level"], s["final_train_loss"], levels[0], base, 100 * (s["final_train_loss"] / base - 1)))
    plot(jsonl, os.path.join(args.out, "gpt_bytes.png"), [s["level"] for s in summaries])


if __name__ == "__main__":
    main()
