"""A bounded mutation campaign against the actnn-opt binary (issue 19): N
runs over mutated graph text (.tsir), ONNX text (.onnxtxt), ONNX binary
(.onnx) and TorchScript archives (.pt), seeded from tests/fuzz/corpus.

    ~/.cache/actnn/ort-venv/bin/python3 tests/fuzz/mutation_campaign.py \
        --actnn-opt build/bin/actnn-opt --runtime build/lib/libactnn_runtime.so \
        --runs 1500 --seed 1 --jobs 2 --out /tmp/campaign

(the ONNX Runtime venv of scripts/install-deps.sh: it has the onnx package,
for protobuf-level mutations, and sees Debian's torch, for loading outputs).

Mutations follow each format's structure, so that they get past the first
check: text gets lines deleted, duplicated or swapped and tokens replaced
(by another token of the file or a hostile literal); ONNX models get nodes'
ops, operands, attributes, tensor data, shapes, opsets and IR versions
changed through the protobuf; archives get one record (pickle, code, tensor,
debug information) mutated and the zip written again with correct CRCs. A
tenth of the inputs of each kind get raw byte mutations instead.

Each run: actnn-opt --level=L0..L5 (sometimes --report), an archive
written with --emit=module, ONNX with -o. Findings: a signal (crash), a
timeout (hang), an exit other than 0, 1, 2, an error exit with nothing on
stderr, and an output of a successful run that does not load (archives:
torch.jit.load after the runtime library; an ONNX training graph rewritten
from a binary model: onnx.load; IR text is not loaded). Messages
that leak LibTorch internals ("INTERNAL ASSERT FAILED", "please report a bug
to PyTorch", a C++ backtrace) are counted apart. Each finding's input is kept
in --out; the summary is one JSON object on stdout; exit 1 when anything was
found.
"""
import argparse
import collections
import concurrent.futures
import io
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
KINDS = {"graph_text": ".tsir", "onnx_text": ".onnxtxt", "onnx": ".onnx", "archive": ".pt"}
HOSTILE = ["0", "-1", "1", "2147483648", "9223372036854775808", "-9223372036854775809", "1e999999", "-inf",
           "nan", "0.0", "", "Tensor", "int", "float", "NoneType", "Tensor[]", "(int, int)", "prim::GetAttr",
           "prim::If", "prim::Loop", "aten::index", "aten::add", "%undefined", "(", ")", "[", "]", "{", "}", ",",
           "=", ":", '"', "'", "\\", "\x00", "\xff", "<", ">", "graph(", "return", "Conv", "Scan", "Loop", "If"]
TOKEN = re.compile(r"%?[A-Za-z_][\w.:]*|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\S")
LEAKS = ("INTERNAL ASSERT FAILED", "please report a bug to PyTorch", "frame #")


def mutate_bytes(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if not data or choice < 0.3:
            pos = rng.randint(0, len(data))
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice < 0.6:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.8:
            pos = rng.randrange(len(data))
            del data[pos:pos + rng.randint(1, 16)]
        else:
            del data[rng.randint(0, len(data)):]
    return bytes(data)


def mutate_text(rng, text):
    lines = text.splitlines(keepends=True) or [""]
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        i = rng.randrange(len(lines))
        if choice < 0.15 and len(lines) > 1:
            del lines[i]
        elif choice < 0.25:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif choice < 0.35:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            tokens = list(TOKEN.finditer(lines[i]))
            if not tokens:
                continue
            t = rng.choice(tokens)
            if rng.random() < 0.5:
                pool = TOKEN.findall("".join(lines))
                new = rng.choice(pool) if pool else ""
            else:
                new = rng.choice(HOSTILE)
            lines[i] = lines[i][:t.start()] + new + lines[i][t.end():]
    return "".join(lines)


def mutate_onnx(rng, data):
    import onnx
    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    for _ in range(rng.randint(1, 2)):
        choice = rng.random()
        nodes = list(graph.node)
        if choice < 0.3 and nodes:
            node = rng.choice(nodes)
            what = rng.random()
            if what < 0.3:
                node.op_type = rng.choice([n.op_type for n in nodes] + ["Scan", "Loop", "If", "Mod", "Bogus", ""])
            elif what < 0.5 and node.input:
                del node.input[rng.randrange(len(node.input))]
            elif what < 0.6:
                node.input.append(rng.choice(["", "nowhere"] + [v for n in nodes for v in n.output]))
            elif what < 0.7 and node.output:
                del node.output[rng.randrange(len(node.output))]
            elif what < 0.8:
                graph.node.remove(node)
            elif node.attribute:
                attr = rng.choice(list(node.attribute))
                if rng.random() < 0.3:
                    node.attribute.remove(attr)
                elif attr.ints:
                    attr.ints[rng.randrange(len(attr.ints))] = rng.choice([0, -1, -7, 2**31, 2**62, 3])
                elif attr.type == onnx.AttributeProto.INT:
                    attr.i = rng.choice([0, -1, 2, 2**40, -2**40])
                elif attr.type == onnx.AttributeProto.FLOAT:
                    attr.f = rng.choice([0.0, -1.0, float("inf"), float("nan"), 1e30])
                else:
                    attr.type = rng.randrange(0, 15)
        elif choice < 0.5 and graph.initializer:
            init = rng.choice(list(graph.initializer))
            what = rng.random()
            if what < 0.4 and init.raw_data:
                init.raw_data = init.raw_data[:rng.randrange(len(init.raw_data) + 1)]
            elif what < 0.7 and init.dims:
                init.dims[rng.randrange(len(init.dims))] = rng.choice([0, -1, 1, 2**33])
            elif what < 0.85:
                init.data_type = rng.randrange(0, 20)
            else:
                graph.initializer.remove(init)
        elif choice < 0.65 and graph.input:
            value = rng.choice(list(graph.input))
            dims = value.type.tensor_type.shape.dim
            if dims and rng.random() < 0.6:
                dim = dims[rng.randrange(len(dims))]
                if rng.random() < 0.5:
                    dim.dim_value = rng.choice([0, -1, 1, 2**40])
                else:
                    dim.dim_param = "n"
            else:
                value.type.tensor_type.elem_type = rng.randrange(0, 20)
        elif choice < 0.8 and model.opset_import:
            rng.choice(list(model.opset_import)).version = rng.choice([0, 1, 6, 12, 18, 21, 99, -5])
        elif choice < 0.9:
            model.ir_version = rng.choice([0, 1, 3, 9, 10, 11, 99])
        elif graph.output:
            del graph.output[rng.randrange(len(graph.output))]
    return model.SerializeToString()


def mutate_archive(rng, data):
    src = zipfile.ZipFile(io.BytesIO(data))
    names = src.namelist()
    target = rng.choice([n for n in names if not n.endswith("/")])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in names:
            body = src.read(name)
            if name == target:
                if name.endswith(".py") or name.endswith("version"):
                    body = mutate_text(rng, body.decode(errors="replace")).encode(errors="replace")
                elif "/data/" in name and rng.random() < 0.5:
                    body = body[:rng.randrange(len(body) + 1)]
                else:
                    body = mutate_bytes(rng, body)
            dst.writestr(name, body)
    return out.getvalue()


def mutate(rng, kind, data):
    if rng.random() < 0.1:
        return mutate_bytes(rng, data), "bytes"
    try:
        if kind in ("graph_text", "onnx_text"):
            return mutate_text(rng, data.decode(errors="replace")).encode(errors="replace"), "text"
        if kind == "onnx":
            return mutate_onnx(rng, data), "proto"
        return mutate_archive(rng, data), "record"
    except Exception:  # a seed the structured mutator cannot read: raw bytes
        return mutate_bytes(rng, data), "bytes"


def run_one(args, index, kind, data, how, rng_args):
    folder = pathlib.Path(args.out) / "runs" / f"{index:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"input{KINDS[kind]}"
    source.write_bytes(data)
    level, report = rng_args
    cmd = [args.actnn_opt, f"--level=L{level}", str(source)]
    output = folder / ("output.pt" if kind == "archive" else "output")
    if report:
        cmd.append("--report")
    elif kind == "archive":
        cmd += ["--emit=module", "-o", str(output)]
    elif kind in ("onnx", "onnx_text"):
        cmd += ["-o", str(output)]
    try:
        # actnn-opt's reader children (LibTorch's parser, loader) get a
        # quarter of the run's time before they are killed and reported.
        env = dict(os.environ, ACTNN_READ_SECONDS=str(max(1, int(args.timeout / 4))))
        done = subprocess.run(cmd, capture_output=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"index": index, "kind": kind, "how": how, "cmd": cmd, "finding": "hang", "code": None}
    stderr = done.stderr.decode(errors="replace")
    result = {"index": index, "kind": kind, "how": how, "cmd": cmd, "code": done.returncode, "finding": None,
              "leak": any(s in stderr for s in LEAKS), "stderr": stderr[-600:]}
    if done.returncode < 0:
        result["finding"] = f"signal {-done.returncode}"
    elif done.returncode not in (0, 1, 2):
        result["finding"] = f"exit {done.returncode}"
    elif done.returncode != 0 and not stderr.strip():
        result["finding"] = "error exit without a message"
    elif done.returncode == 0:
        if output.exists():
            result["output"] = str(output)
        elif not report and kind == "graph_text" and not done.stdout:
            result["finding"] = "exit 0 without output"
    return result


def check_outputs(args, results):
    """Loads every archive and binary ONNX model a successful run wrote, in
    one child process (a crash there is a finding too)."""
    archives = [r["output"] for r in results if r.get("output", "").endswith(".pt")]
    # A binary ONNX input is written back as ONNX when it is a training graph
    # (rewritten in place); an imported model's output is IR text.
    models = [r["output"] for r in results if r.get("output") and r["kind"] == "onnx"
              and not pathlib.Path(r["output"]).read_bytes().startswith(b"# actnn")]
    script = (
        "import sys, json, torch, onnx\n"
        "torch.ops.load_library(sys.argv[1])\n"
        "paths = json.loads(sys.stdin.read())\n"
        "bad = {}\n"
        "for p in paths['archives']:\n"
        "    try: torch.jit.load(p)\n"
        "    except Exception as e: bad[p] = str(e)[:300]\n"
        "for p in paths['models']:\n"
        "    text = open(p, 'rb').read()\n"
        "    try: onnx.load_from_string(text)\n"
        "    except Exception as e: bad[p] = str(e)[:300]\n"
        "print(json.dumps(bad))\n")
    done = subprocess.run([sys.executable, "-c", script, args.runtime], capture_output=True, text=True,
                          input=json.dumps({"archives": archives, "models": models}))
    if done.returncode != 0:
        return {"<loader>": f"the output loader exited {done.returncode}: {done.stderr[-600:]}"}, len(archives) + len(models)
    return json.loads(done.stdout.strip().splitlines()[-1]), len(archives) + len(models)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actnn-opt", required=True)
    parser.add_argument("--runtime", required=True, help="libactnn_runtime.so, to load the archives written")
    parser.add_argument("--runs", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--corpus", default=str(ROOT / "tests" / "fuzz" / "corpus"))
    parser.add_argument("--out", required=True, help="folder for inputs, outputs and findings")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    seeds = {kind: sorted((pathlib.Path(args.corpus) / kind).iterdir()) for kind in KINDS}
    jobs = []
    for index in range(args.runs):
        kind = list(KINDS)[index % len(KINDS)]
        seed = rng.choice(seeds[kind])
        data, how = mutate(rng, kind, seed.read_bytes())
        jobs.append((index, kind, data, how, (rng.randrange(6), rng.random() < 0.1)))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: run_one(args, *j), jobs))

    unloadable, checked = check_outputs(args, results)
    for r in results:
        if r.get("output") in unloadable:
            r["finding"] = "unloadable output: " + unloadable[r["output"]]
    findings = [r for r in results if r["finding"]]
    if "<loader>" in unloadable:
        findings.append({"finding": unloadable["<loader>"]})
    summary = {
        "runs": len(results),
        "by_kind": dict(collections.Counter(r["kind"] for r in results)),
        "exit_codes": {str(k): v for k, v in sorted(collections.Counter(r["code"] for r in results).items(),
                                                     key=lambda kv: str(kv[0]))},
        "outputs_loaded": checked,
        "leaked_internal_messages": sum(1 for r in results if r.get("leak")),
        "findings": [{k: r.get(k) for k in ("index", "kind", "how", "finding", "cmd", "stderr")} for r in findings],
    }
    with open(pathlib.Path(args.out) / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    leaks = [r for r in results if r.get("leak")]
    summary["leak_examples"] = [{"index": r["index"], "stderr": r["stderr"][-300:]} for r in leaks[:5]]
    print(json.dumps(summary, indent=1))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
