"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<kind>/), which is
committed; run it again when the lit inputs change much.

    /usr/bin/python3 tests/fuzz/make_corpus.py [ORT_VENV_PYTHON]

graph_text and onnx_text: every graph of the lit suite (tests/lit/**: each
split-file section `#--- NAME.tsir|.onnxtxt`, and files that are one graph),
valid and invalid ones alike, so the fuzzers start from the inputs the error
tests cut by hand. archive: small scripted modules of
tests/lit/torchscript/Inputs/make_module.py (Debian's torch). onnx: the
`net` module exported by torch.onnx in training and in eval mode, and, when
the ONNX Runtime venv's python is given (scripts/install-deps.sh makes it),
ONNX Runtime's training graph of make_ort_training.py's `cnn`.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def lit_graphs(extension):
    """(name, text) of every graph with this extension in the lit suite."""
    for path in sorted((ROOT / "tests" / "lit").rglob("*")):
        if path.is_dir() or path.suffix not in (".tsir", ".onnxtxt", ".test"):
            continue
        text = path.read_text()
        sections, current, lines = [], None, []
        for line in text.splitlines(keepends=True):
            if line.startswith("#--- "):
                if current:
                    sections.append((current, "".join(lines)))
                current, lines = line[5:].strip(), []
            elif current:
                lines.append(line)
        if current:
            sections.append((current, "".join(lines)))
        if sections:
            for name, body in sections:
                if name.endswith(extension):
                    yield f"{path.stem}-{name}", body
        elif path.suffix == extension:
            yield path.name, text


def write(kind, name, data):
    folder = CORPUS / kind
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    # Names carry a hash: two lit sections of the same name stay two seeds.
    digest = hashlib.sha1(data).hexdigest()[:8]
    (folder / f"{pathlib.Path(name).stem}-{digest}{pathlib.Path(name).suffix}").write_bytes(data)


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    for kind, extension in (("graph_text", ".tsir"), ("onnx_text", ".onnxtxt")):
        for name, text in lit_graphs(extension):
            write(kind, name, text)

    import torch  # Debian's python3-torch

    make_module = ROOT / "tests" / "lit" / "torchscript" / "Inputs" / "make_module.py"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for module in ("net", "net-eval", "containers", "setattr", "no-rule"):
            out = tmp / f"{module}.pt"
            subprocess.run([sys.executable, str(make_module), module, str(out)], check=True)
            write("archive", out.name, out.read_bytes())

        sys.path.insert(0, str(make_module.parent))
        import make_module as modules

        torch.manual_seed(0)
        net = modules.Net()
        x = torch.randn(2, 3, 8, 8)
        for mode, name in ((torch.onnx.TrainingMode.TRAINING, "net-train.onnx"),
                           (torch.onnx.TrainingMode.EVAL, "net-eval.onnx")):
            out = tmp / name
            torch.onnx.export(net, (x,), str(out), training=mode, opset_version=14,
                              do_constant_folding=False, input_names=["x"], output_names=["y"])
            write("onnx", name, out.read_bytes())

        if len(sys.argv) > 1:
            script = ROOT / "tests" / "models" / "make_ort_training.py"
            subprocess.run([sys.argv[1], str(script), str(tmp / "ort"), "cnn"], check=True)
            write("onnx", "ort-cnn-training.onnx", (tmp / "ort" / "cnn" / "training_model.onnx").read_bytes())

    for kind in sorted(os.listdir(CORPUS)):
        files = list((CORPUS / kind).iterdir())
        print(f"{kind}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
