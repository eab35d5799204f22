"""How much gradient noise an actnn level adds, measured in one minute
instead of a 1000-step training run: the GPT byte model of gpt_bytes.py is
trained at full precision to a checkpoint, then, on one fixed batch, each
level's parameter gradient is computed `--repeats` times (different
quantization seeds) and compared with the exact one.

    PYTHONPATH=build-torch2/python ~/.cache/actnn/torch2-venv/bin/python3 \\
        tools/studies/gradient_noise.py [--levels "L2;L3;NAME=PIPELINE"] \\
        [--checkpoint-steps 400] [--repeats 8] [--out build/figures]

Per level it prints the quantization noise (the mean over repeats of
|g - g_exact|^2, summed over all parameters) as a ratio to the minibatch
noise SGD itself has (the variance of the exact gradient over 16 other
batches, summed the same way), both in raw gradient units and divided
elementwise by the root of AdamW's second moment at the checkpoint
("Adam units"), and which parameters the raw noise lands in.

Which one predicts training quality: on this model, the raw ratio. Weighing
the bit allocator's costs to minimize noise in Adam units (a 3.5x smaller
Adam-units ratio than L3's) trained worse than L3 (README, "Training
quality"); its raw ratio was 11x L3's. Under the Fisher approximation of the
loss curvature (H ~ diag(v)), the loss a noisy Adam step adds is proportional
to the raw noise, which agrees.

The checkpoint is cached (--checkpoint, keyed by the step count); the fixed
batch and the 16 reference batches come from a data seed the 1000-step study
does not use. Writes OUT/gradient_noise.jsonl.
"""
import argparse
import json
import os

import torch

import actnn
import gpt_bytes


def checkpoint(args, train):
    """Model weights and AdamW's second moments after args.checkpoint_steps
    full-precision steps of gpt_bytes.py's schedule (1000 steps in all)."""
    path = "%s.%d.pt" % (args.checkpoint, args.checkpoint_steps)
    torch.manual_seed(0)
    model = gpt_bytes.Gpt(args.layers, args.dim, args.heads, args.seq).train()
    if os.path.exists(path):
        saved = torch.load(path)
        model.load_state_dict(saved["model"])
        return model, saved["second_moment"]
    opt, sched = gpt_bytes.optimizer(model, args.lr, 1000)
    for step, window in enumerate(gpt_bytes.batches(train, args.checkpoint_steps, args.batch, args.seq, seed=2), 1):
        loss = gpt_bytes.loss_of(model, window)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            print("checkpoint: fp step %d, loss %.4f" % (step, loss.item()), flush=True)
    moment = {n: opt.state[p]["exp_avg_sq"].clone() for n, p in model.named_parameters()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"model": model.state_dict(), "second_moment": moment}, path)
    return model, moment


def split_heads(grads, dim):
    """qkv's weight and bias as q, k and v: their gradients differ in scale."""
    out = {}
    for name, g in grads.items():
        if ".qkv." in name:
            for j, part in enumerate("qkv"):
                out[name.replace(".qkv.", ".%s." % part)] = g[j * dim:(j + 1) * dim]
        else:
            out[name] = g
    return out


def kind(name):
    """blocks.3.fc.weight -> fc.weight: the same parameter of every block."""
    parts = name.split(".")
    return ".".join(parts[2:]) if parts[0] == "blocks" else name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="L2;L3")
    ap.add_argument("--checkpoint-steps", type=int, default=400)
    ap.add_argument("--checkpoint", default=os.path.expanduser("~/.cache/actnn/gradient_noise/gpt_bytes"))
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--warm", type=int, default=4, help="steps that give the L3 allocator its statistics")
    gpt_bytes.add_model_arguments(ap)
    args = ap.parse_args()
    data, _ = gpt_bytes.corpus()
    train = data[:int(data.numel() * 0.95)]
    model, moment = checkpoint(args, train)

    def gradients(module, window):
        for p in model.parameters():
            p.grad = None
        gpt_bytes.loss_of(module, window).backward()
        return split_heads({n: p.grad.detach().clone() for n, p in model.named_parameters()}, args.dim)

    windows = list(gpt_bytes.batches(train, 1 + 16 + args.warm, args.batch, args.seq, seed=77))
    fixed = windows[0]
    exact = gradients(model, fixed)
    moment = split_heads(moment, args.dim)
    # k's bias has an exactly zero gradient (softmax ignores a per-row
    # shift): it changes nothing and is left out.
    names = [n for n in exact if not n.endswith(".k.bias")]
    # Adam divides by sqrt(v) (+ a floor at 1% of the tensor's RMS).
    denom = {n: moment[n].sqrt() + 0.01 * moment[n].mean().sqrt() + 1e-12 for n in names}
    reference = [gradients(model, w) for w in windows[1:17]]
    sgd_raw = {n: torch.stack([g[n] for g in reference]).var(0).sum().item() for n in names}
    sgd_adam = {n: torch.stack([g[n] / denom[n] for g in reference]).var(0).sum().item() for n in names}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gradient_noise.jsonl"), "w") as out:
        for spec in args.levels.split(";"):
            name, _, pipeline = spec.partition("=")
            module = actnn.compile(model, passes=pipeline) if pipeline else actnn.compile(model, name)
            for i, w in enumerate(windows[17:]):
                torch.manual_seed(1000 + i)
                gradients(module, w)
            raw = {n: 0.0 for n in names}
            adam = {n: 0.0 for n in names}
            for r in range(args.repeats):
                torch.manual_seed(r)
                g = gradients(module, fixed)
                for n in names:
                    d = g[n] - exact[n]
                    raw[n] += d.square().sum().item() / args.repeats
                    adam[n] += (d / denom[n]).square().sum().item() / args.repeats
            total_raw = sum(raw.values())
            shares = {}
            for n in names:
                shares[kind(n)] = shares.get(kind(n), 0.0) + raw[n] / total_raw
            row = {"level": name, "raw_ratio": total_raw / sum(sgd_raw.values()),
                   "adam_ratio": sum(adam.values()) / sum(sgd_adam.values()),
                   "raw_shares": {k: round(v, 4) for k, v in sorted(shares.items()) if v >= 0.01}}
            out.write(json.dumps(row) + "\n")
            out.flush()
            print("%s: quantization noise / SGD noise: raw %.4f, Adam units %.4f" % (
                name, row["raw_ratio"], row["adam_ratio"]), flush=True)
            print("   raw noise lands in: " + ", ".join("%s %.1f%%" % (k, 100 * v)
                                                      for k, v in row["raw_shares"].items()), flush=True)


if __name__ == "__main__":
    main()
