"""actnn: train PyTorch models with their saved activations compressed.

    import actnn, torch, torchvision
    model = torchvision.models.resnet18()
    m = actnn.compile(model)          # L3: 2 bits per saved activation on average
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()                   # the gradients land in model's parameters
    m.save("resnet18.actnn.pt")       # an ordinary TorchScript archive
    m = actnn.load("resnet18.actnn.pt")

    print(actnn.report(model, x))     # what is saved for backward, and in how many bytes

The compiler (C++, LibTorch) is the library libactnn.so, loaded on import
into the torch this interpreter runs; it must have been built against that
torch (pip install . builds it so). Levels: L0 (exact, the explicit
forward / backward graphs), L1 (4-bit convolution inputs), L2 (4-bit
everywhere), L3 (2-bit average, mixed precision), L4 (L3 + swapping to host
memory), L5 (L4 + a static memory plan).
"""
import os
import warnings

import torch

from ._report import Report, SavedValue

__all__ = ["compile", "report", "load", "CompileError", "Report", "SavedValue", "LEVELS", "library_path"]

LEVELS = ("L0", "L1", "L2", "L3", "L4", "L5")


class CompileError(RuntimeError):
    """The compiler could not compile the module: the message names the op,
    the node and the source line."""


def library_path():
    """The libactnn.so this package loads: actnn/lib in an installed package,
    the build tree's for the copy CMake makes in build/python."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "lib", "libactnn.so")
    if os.path.exists(installed):
        return installed
    try:
        from . import _build_paths
    except ImportError:
        raise ImportError("actnn: no libactnn.so beside the package (%s) and no build tree recorded; "
                          "install with `pip install .` or use build/python from a CMake build" % installed) from None
    return _build_paths.LIBRARY


torch.ops.load_library(library_path())


def _quiet(call, *args, **kwargs):
    # torch 2.x deprecates TorchScript with a warning on every script / trace /
    # save / load; actnn.compile uses it on the user's behalf.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        return call(*args, **kwargs)


def _as_tuple(example_inputs):
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    raise TypeError("actnn: example_inputs must be a tensor or a tuple of them, got %s" % type(example_inputs).__name__)


def _script(model, example_inputs, who):
    """A ScriptModule for `model`: loaded, as given, scripted, or traced."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError("%s: no archive at '%s'" % (who, path))
        return _quiet(torch.jit.load, path)
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TypeError("%s expects an nn.Module, a torch.jit.ScriptModule or an archive path, got %s"
                        % (who, type(model).__name__))
    try:
        return _quiet(torch.jit.script, model)
    except Exception as e:  # TorchScript's frontend raises several types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if example_inputs is None:
            raise CompileError("%s: %s cannot be scripted (%s); pass example_inputs to trace it instead"
                               % (who, type(model).__name__, reason)) from e
    try:
        return _quiet(torch.jit.trace, model, example_inputs, check_trace=False)
    except Exception as e:
        raise CompileError("%s: %s can be neither scripted nor traced with the example inputs: %s"
                           % (who, type(model).__name__, str(e).strip().splitlines()[0])) from e


def _capture_export(model, example_inputs, who):
    """A ScriptModule built from torch.export's programs of `model` in train
    and in eval mode (_export.py); no TorchScript frontend involved."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise TypeError("%s: capture='export' takes an nn.Module, got %s" % (who, type(model).__name__))
    if example_inputs is None:
        raise ValueError("%s: capture='export' needs example_inputs (torch.export runs the model on them)" % who)
    if not hasattr(torch, "export") or not hasattr(torch.export, "export"):
        raise CompileError("%s: capture='export' needs torch.export (PyTorch 2.x); this is torch %s"
                           % (who, torch.__version__))
    for t in example_inputs:
        if not isinstance(t, torch.Tensor):
            raise TypeError("%s: capture='export' takes tensor example inputs, got %s" % (who, type(t).__name__))
    from . import _export as export
    dynamic = tuple({0: torch.export.Dim.AUTO} if t.dim() > 0 else None for t in example_inputs)
    name = type(model).__name__
    was_training = model.training
    programs = []
    try:
        for training in (True, False):
            model.train(training)
            mode = "train" if training else "eval"
            try:
                program = torch.export.export(model, tuple(example_inputs), dynamic_shapes=dynamic)
            except Exception as e:
                raise CompileError("%s: torch.export of %s in %s mode failed: %s"
                                   % (who, name, mode, str(e).strip().splitlines()[0])) from e
            try:
                programs.append(export.translate(program, "%s (%s mode)" % (name, mode)))
            except export.ExportError as e:
                raise CompileError("%s: %s" % (who, e)) from None
    finally:
        model.train(was_training)
    state = dict(model.state_dict(keep_vars=True))
    state.update(dict(model.named_buffers(remove_duplicate=False)))  # non-persistent ones too
    names, kinds, tensors = [], [], []
    for t in programs:
        for target, kind in t.state:
            if target in names:
                continue
            value = t.program.constants[target] if kind == "CONSTANT_TENSOR" else state.get(target)
            if value is None:
                raise CompileError("%s: the exported program reads '%s', which %s does not hold"
                                   % (who, target, name))
            names.append(target)
            kinds.append(kind)
            tensors.append(value)
    # What the programs do not read (the second name of a tied weight, an
    # unused head) is registered too: the module's state_dict keys are the
    # model's.
    for target, value in model.state_dict(keep_vars=True).items():
        if target not in names:
            names.append(target)
            kinds.append("PARAMETER" if isinstance(value, torch.nn.Parameter) else "BUFFER")
            tensors.append(value)
    built = _call(torch.ops.actnn.module_from_export, who, name, programs[0].input_names, names, kinds, tensors,
                  [t.text for t in programs], [[target for target, _ in t.state] for t in programs],
                  [{k: "\n".join(v) for k, v in t.locations.items()} for t in programs])
    return torch.jit._recursive.wrap_cpp_module(built)


def _capture(model, example_inputs, who, capture):
    if capture == "script":
        return _script(model, example_inputs, who)
    if capture == "export":
        return _capture_export(model, example_inputs, who)
    raise ValueError("%s: capture must be 'script' or 'export', got %r" % (who, capture))


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _shape_text(shapes):
    """{"x": (8, 3, 32, 32), "ids": tensor} -> 'x:8x3x32x32,ids:8x16:int64'"""
    entries = []
    for name, shape in shapes.items():
        dtype = None
        if isinstance(shape, torch.Tensor):
            shape, dtype = tuple(shape.shape), shape.dtype
        dims = "x".join(str(int(d)) for d in shape)
        entries.append("%s:%s%s" % (name, dims, "" if dtype in (None, torch.float32) else ":" + _dtype_name(dtype)))
    return ",".join(entries)


def _input_names(scripted):
    return [a.name for a in scripted.forward.schema.arguments[1:]]


def _options(who, level, passes, input_shapes, fallback):
    if passes is None and level not in LEVELS:
        raise ValueError("%s: level must be one of %s, got %r" % (who, ", ".join(LEVELS), level))
    options = {"level": str(level), "fallback": "true" if fallback else "false"}
    if passes is not None:
        options["passes"] = str(passes)
    if input_shapes:
        options["input_shapes"] = input_shapes if isinstance(input_shapes, str) else _shape_text(input_shapes)
    return options


def _call(op, who, *args):
    try:
        return op(*args)
    except RuntimeError as e:
        # c10::Error's message, without LibTorch's trailing C++ context lines.
        message = str(e).split("\nException raised from ")[0].strip()
        raise CompileError(message if message.startswith("actnn") else "%s: %s" % (who, message)) from None


def compile(model, level="L3", example_inputs=None, *, passes=None, input_shapes=None, fallback=True,
            capture="script"):
    """Compile `model` into a module that trains with its saved activations
    compressed at `level`, with ordinary `loss.backward()`.

    model: an nn.Module (scripted for you; traced with example_inputs when it
    cannot be scripted), a torch.jit.ScriptModule, or the path of a saved one.
    The result shares the model's parameters and buffers: an optimizer over
    model.parameters() trains it. In eval mode it runs the original forward.

    input_shapes: {"x": (8, 3, 224, 224)} (or tensors, or actnn-opt's text
    "x:8x3x224x224") specializes ahead of time; otherwise the module
    specializes itself to new input sizes at run time where it needs to.
    passes: an explicit pipeline (actnn-opt --passes) instead of a level.
    fallback: ops with no derivative rule run under autograd (False: raise).
    capture: how an nn.Module becomes a graph: "script" (TorchScript; traced
    with example_inputs where scripting fails) or "export" (torch.export, in
    train and in eval mode, on example_inputs, with a dynamic batch size;
    PyTorch 2.x; see actnn/_export.py).
    Raises CompileError with the compiler's message (op, node, source line).
    """
    example = _as_tuple(example_inputs)
    options = _options("actnn.compile", level, passes, input_shapes, fallback)
    original = model
    scripted = _capture(model, example, "actnn.compile", capture)
    compiled = _call(torch.ops.actnn.compile, "actnn.compile", scripted._c, options)
    module = torch.jit._recursive.wrap_cpp_module(compiled)
    if isinstance(original, torch.nn.Module) and not isinstance(original, torch.jit.ScriptModule):
        module.train(original.training)
    return module


def report(model, example_inputs, level="L3", *, passes=None, fallback=True, capture="script"):
    """What the module compiled at `level` saves for its backward pass, for
    inputs shaped like `example_inputs`: per value its kind, shape, bytes at
    full precision and as stored, and bits per value (a Report; print it for
    a table). Runs the compiled forward once on random inputs of those shapes;
    the model itself is not changed."""
    example = _as_tuple(example_inputs)
    if example is None:
        raise ValueError("actnn.report needs example_inputs: the report is measured at their shapes")
    scripted = _capture(model, example, "actnn.report", capture)
    names = _input_names(scripted)
    if len(example) != len(names):
        raise ValueError("actnn.report: the forward takes %d inputs (%s), got %d example inputs"
                         % (len(names), ", ".join(names), len(example)))
    shapes = {n: t for n, t in zip(names, example) if isinstance(t, torch.Tensor)}
    options = _options("actnn.report", level, passes, shapes, fallback)
    text = _call(torch.ops.actnn.report, "actnn.report", scripted._c, options)
    return Report.from_json_lines(text)


def load(path):
    """torch.jit.load of a compiled archive in a process that can specialize
    it to new input sizes (the compiler is loaded with this package). The
    archive's tensor records are checked against the storages its pickles
    declare first (actnn/runtime/archive_check.h): a truncated record raises
    ValueError ("the archive is malformed: ...") instead of loading garbage.
    Damaged code or debug records can still crash LibTorch's own loader in
    this process (as they crash torch.jit.load): load an archive you do not
    trust in a child process first, or run it through actnn-opt, which does."""
    path = os.fspath(path)
    try:
        torch.ops.actnn.check_archive(path)
    except RuntimeError as e:
        raise ValueError(str(e).split("\n")[0]) from None
    return _quiet(torch.jit.load, path)
