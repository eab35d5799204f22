"""The model zoo: every model builder of Debian's torchvision 0.14 under
torchvision.models (80 classification), .segmentation (6) and .video (6),
random weights, train mode, compiled by actnn-opt and checked. Not part of the
default CI run (it takes long on a 2-core machine); run it as

    /usr/bin/python3 tests/zoo/zoo.py [--mode compile|parity|train] [--only NAME,...] [--start NAME] [--out DIR]

from the repository root after building. Per model it prints one JSON line:
how far it got (scripted, compiled at L0 with the input's sizes, L0 gradients
against LibTorch autograd at batch 2, L3 five SGD steps at batch 8), the first line of the error
that stopped it, how many of F's ops were differentiated by a rule and which
ran under the autograd fallback, the L0 max relative error (loss, every
parameter gradient, the input gradient), the L3 saved-bytes ratio against
autograd at batch 8 (actnn-opt --report) and the L3 losses; then a Markdown
table.

Inputs are the smallest each model takes comfortably: batch 2, 64x64 images
(ViT at 64 or 56, Inception 299, MaxViT 224), clips of 4x32x32 (S3D 16x224x224,
MViT 16x224x224). Dropout and stochastic depth keep their probabilities; both
sides of the comparison draw their masks from the same seed.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEGMENTATION = ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet50",
                "fcn_resnet101", "lraspp_mobilenet_v3_large"]
VIDEO = ["mvit_v1_b", "mvit_v2_s", "r3d_18", "mc3_18", "r2plus1d_18", "s3d"]
# Batch of the L3 steps where --l3-batch's does not fit: the MViTs (layer
# norms only, so batch 2 holds no small-count batch norm) at 8x3x16x224x224
# ran over two hours without finishing their five steps on 2 cores.
L3_BATCH = {"mvit_v1_b": 2, "mvit_v2_s": 2}


def classification():
    import inspect
    skip = {"get_weight", "get_model_weights", "list_models", "get_model", "get_model_builder"}
    return [n for n, f in vars(torchvision.models).items()
            if inspect.isfunction(f) and n.islower() and not n.startswith("_") and n not in skip]


def build(name):
    """(module, input shape)"""
    if name in SEGMENTATION:
        m = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=5)
        return m, [2, 3, 64, 64]
    if name in VIDEO:
        m = getattr(torchvision.models.video, name)()
        shape = {"s3d": [2, 3, 16, 224, 224], "mvit_v1_b": [2, 3, 16, 224, 224],
                 "mvit_v2_s": [2, 3, 16, 224, 224]}.get(name, [2, 3, 4, 32, 32])
        return m, shape
    kwargs, size = {}, 64
    if name.startswith("vit_"):
        size = 56 if name == "vit_h_14" else 64
        kwargs["image_size"] = size
    if name == "inception_v3":
        size = 299  # its auxiliary classifier needs 17x17 features
    if name == "maxvit_t":
        size = 224
    return getattr(torchvision.models, name)(**kwargs), [2, 3, size, size]


def first_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    for l in lines:
        if "error" in l.lower():
            return l.strip()[:300]
    return lines[0][:300] if lines else ""


def loss_of(out, probe_seed=1):
    outs = out if isinstance(out, dict) else {"out": out} if torch.is_tensor(out) else dict(enumerate(out))
    torch.manual_seed(probe_seed)
    total = 0
    for k in sorted(outs, key=str):
        v = outs[k]
        if torch.is_tensor(v) and v.is_floating_point():
            total = total + (v * torch.randn_like(v)).sum()
    return total


def step(m, x):
    for p in m.parameters():
        p.grad = None
    xx = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    loss = loss_of(m(xx))
    loss.backward()
    # The gradients themselves, not copies: the caller drops the module next
    # (regnet_y_128gf's 2.6 GB of parameters must fit twice, not four times).
    return loss.item(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}, xx.grad


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def compile_at(args, level, input_name, sizes, source, target):
    """actnn-opt at `level` specialized to `sizes`; the first error line, or None."""
    cmd = [args.actnn_opt, "--level=" + level, "--input-shape=%s:%s" % (input_name, sizes), "--emit=module",
           "-o", target, source]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    return first_line(r.stderr) or "actnn-opt exited with %d" % r.returncode if r.returncode != 0 else None


def report_of(args, level, input_name, sizes, source):
    """actnn-opt --report=json's summary line (a dict), or raises."""
    cmd = [args.actnn_opt, "--level=" + level, "--input-shape=%s:%s" % (input_name, sizes), "--report=json", source]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if r.returncode != 0:
        raise RuntimeError(first_line(r.stderr) or "actnn-opt --report exited with %d" % r.returncode)
    return json.loads(r.stdout.strip().splitlines()[-1])


def sgd_steps(module, x):
    """Five SGD steps (lr 0.01) of cross entropy towards class 0 (per pixel
    for segmentation) on the fixed batch x; the losses. Stochastic depth and
    dropout draw from the same seed whichever module runs."""
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    torch.manual_seed(1)
    losses = []
    for _ in range(5):
        out = module(x)
        out = out["out"] if isinstance(out, dict) else out if torch.is_tensor(out) else out[0]
        target = torch.zeros([out.shape[0]] + list(out.shape[2:]), dtype=torch.long)
        loss = torch.nn.functional.cross_entropy(out.float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def run(name, args, out_dir):
    row = {"model": name, "stage": "build"}
    t0 = time.time()
    try:
        torch.manual_seed(0)
        module, shape = build(name)
        module.train()
        scripted = torch.jit.script(module)
        path = os.path.join(out_dir, name + ".pt")
        scripted.save(path)
        row["stage"] = "scripted"
        input_name = scripted.forward.schema.arguments[1].name
        del module, scripted  # one copy of the weights at a time from here
        row["input"] = "x".join(map(str, shape))
        compiled = os.path.join(out_dir, name + ".l0.pt")
        error = compile_at(args, "L0", input_name, row["input"], path, compiled)
        if error:
            row["error"] = error
            return row
        row["stage"] = "compiled"
        summary = report_of(args, "L0", input_name, row["input"], path)
        row["rule_ops"], row["fallback_ops"] = summary["rule_ops"], summary["fallback_ops"]
        if args.mode == "compile":
            return row
        torch.manual_seed(0)
        x = torch.randn(shape)
        la, ga, xa = step(torch.jit.load(path), x)
        lb, gb, xb = step(torch.jit.load(compiled), x)
        errs = [rel(torch.tensor(lb), torch.tensor(la))] + [rel(gb[n], ga[n]) for n in ga if n in gb]
        errs.append(rel(xb, xa))
        missing = [n for n in ga if n not in gb]
        del ga, gb
        row["l0_max_rel_err"] = max(errs)
        if missing:
            row["error"] = "missing gradients: " + ", ".join(missing[:5])
            return row
        row["stage"] = "parity" if max(errs) <= 1e-5 else "parity-mismatch"
        if args.mode == "parity" or row["stage"] != "parity":
            return row
        # L3 at batch 8: at batch 2 the last stages of a 64x64 input hold a
        # handful of values per channel, and 2-bit noise through their batch
        # norms blows some gradients up (README, "Model zoo").
        l3 = os.path.join(out_dir, name + ".l3.pt")
        shape = [L3_BATCH.get(name, args.l3_batch)] + shape[1:]
        x = torch.randn(shape)
        row["l3_input"] = "x".join(map(str, shape))
        error = compile_at(args, "L3", input_name, row["l3_input"], path, l3)
        if error:
            row["error"] = error
            return row
        row["l3_saved_ratio"] = report_of(args, "L3", input_name, row["l3_input"], path)["ratio"]
        losses = sgd_steps(torch.jit.load(l3), x)
        row["l3_losses"] = losses
        ok = all(map(lambda v: v == v and abs(v) != float("inf"), losses)) and losses[-1] < losses[0]
        row["stage"] = "trains" if ok else "l3-not-decreasing"
        if args.fp_steps:
            # The same steps on the scripted module itself (full precision,
            # LibTorch autograd): whether a bumpy L3 curve is the setup's.
            row["fp_losses"] = sgd_steps(torch.jit.load(path), x)
        return row
    except subprocess.TimeoutExpired:
        row["error"] = "timeout after %d s" % args.timeout
        return row
    except Exception as e:  # scripting, loading or running failed
        row["error"] = first_line(str(e)) or type(e).__name__
        return row
    finally:
        row["seconds"] = round(time.time() - t0, 1)
        for suffix in (".pt", ".l0.pt", ".l3.pt"):
            p = os.path.join(out_dir, name + suffix)
            if not args.keep and os.path.exists(p):
                os.remove(p)


def run_child(name, args):
    """run() in a child process, so that a model too large for this machine
    (regnet_y_128gf, vit_h_14: the kernel's OOM killer) costs its own row, not
    the run; and every model starts from a fresh process's memory."""
    cmd = [sys.executable, os.path.abspath(__file__), "--in-process", "--only", name, "--mode", args.mode,
           "--out", args.out, "--actnn-opt", args.actnn_opt, "--runtime", args.runtime,
           "--timeout", str(args.timeout), "--l3-batch", str(args.l3_batch)] + (["--keep"] if args.keep else []) + \
        (["--fp-steps"] if args.fp_steps else [])
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    why = "killed by signal %d (out of memory?)" % -r.returncode if r.returncode < 0 else \
        first_line(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "") or "exit %d" % r.returncode
    return {"model": name, "stage": "build", "error": why, "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["compile", "parity", "train"], default="train")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "zoo"))
    ap.add_argument("--actnn-opt", default=os.path.join(ROOT, "build", "bin", "actnn-opt"))
    ap.add_argument("--runtime", default=os.path.join(ROOT, "build", "lib", "libactnn_runtime.so"))
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the archives")
    ap.add_argument("--l3-batch", type=int, default=8, help="batch of the L3 training steps")
    ap.add_argument("--fp-steps", action="store_true",
                    help="also run the L3 steps on the uncompiled module (fp_losses), from the same weights")
    ap.add_argument("--start", default="", help="skip the models before this one")
    ap.add_argument("--in-process", action="store_true",
                    help="run the models in this process (default: one child process per model)")
    args = ap.parse_args()
    torch.ops.load_library(args.runtime)
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    names = args.only.split(",") if args.only else classification() + SEGMENTATION + VIDEO
    if args.start:
        names = names[names.index(args.start):]
    rows = []
    for name in names:
        if args.in_process:
            row = run(name, args, args.out)
        else:
            row = run_child(name, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| model | input | reached | ops by rule / fallback | L0 max rel. error | L3 saved ratio | stopped by |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        err, ratio = r.get("l0_max_rel_err"), r.get("l3_saved_ratio")
        ops = "%d / %d" % (r["rule_ops"], r["fallback_ops"]) if "rule_ops" in r else "-"
        print("| %s | %s | %s | %s | %s | %s | %s |" % (r["model"], r.get("input", "-"), r["stage"], ops,
                                                        "%.1e" % err if err is not None else "-",
                                                        "%.2fx" % ratio if ratio is not None else "-",
                                                        r.get("error", "").replace("|", "/")))
    counts = {}
    for r in rows:
        counts[r["stage"]] = counts.get(r["stage"], 0) + 1
    print("\n" + ", ".join("%s: %d" % kv for kv in sorted(counts.items())))


if __name__ == "__main__":
    main()
