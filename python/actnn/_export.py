"""torch.export programs into actnn: capture="export".

torch.export (PyTorch 2.x's recommended capture) gives, for a module in
train mode, an ATen graph (the training IR: ops such as aten.conv2d,
aten.batch_norm with its running statistics updated in place, aten.relu_)
whose placeholders are the parameters, buffers and lifted constants, then the
user inputs. Those ATen ops are the ops of a scripted module's graph, so the
translation is one node for one node: this file writes the graph as
TorchScript IR text, and actnn::module_from_export (python/export_module.cpp)
parses it and builds a module with the parameters and buffers registered
under their state_dict names (the same tensors: the original model's
parameters receive the gradients), which actnn.compile then compiles as it
compiles a scripted module.

Eval mode: the program torch.export records for a train-mode module has
training=True baked into every batch norm and dropout, and follows the
train-mode side of any `if self.training` in Python. So the module is
exported twice, in train mode and in eval mode, and the built module's
forward runs the one that matches its `training` flag. A program the user
exported (an ExportedProgram) carries one mode only: its module runs it in
training and raises in eval mode.

Shapes: the batch dimension of every tensor input is exported as dynamic
(torch.export.Dim.AUTO) where the model allows it, so one capture serves
every batch size; the symbolic sizes become aten::size and int arithmetic,
which actnn's specialization folds per input signature like a scripted
module's. Dimensions torch.export specializes stay fixed; a call with other
sizes fails in the first op that disagrees.

What is not translated raises CompileError naming the node, its op and the
model's source line: higher-order ops (torch.cond, while_loop, no_grad or
autocast regions inside forward), custom objects, non-tensor inputs, and
mutated user inputs. Run-time assertions torch.export inserts
(_assert_scalar, _assert_tensor_metadata, sym_constrain_range*) are not
translated: they check what the compiled module's own input-signature guard
and specialization check again.
"""
import collections
import math
import operator
import os
import re

import torch

# c10::ScalarType, c10::Layout and c10::MemoryFormat as TorchScript IR spells
# them: ints.
_DTYPES = {
    torch.uint8: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4,
    torch.float16: 5, torch.float32: 6, torch.float64: 7, torch.complex32: 8,
    torch.complex64: 9, torch.complex128: 10, torch.bool: 11, torch.bfloat16: 15,
}
_LAYOUTS = {torch.strided: 0, torch.sparse_coo: 1}
_MEMORY_FORMATS = {torch.contiguous_format: 0, torch.preserve_format: 1, torch.channels_last: 2,
                   torch.channels_last_3d: 3}

# Python operators on symbolic sizes -> TorchScript's int ops.
_INT_OPS = {
    operator.add: "aten::add", operator.sub: "aten::sub", operator.mul: "aten::mul",
    operator.floordiv: "aten::floordiv", operator.mod: "aten::remainder", operator.truediv: "aten::div",
    operator.neg: "aten::neg", operator.eq: "aten::eq", operator.ne: "aten::ne", operator.lt: "aten::lt",
    operator.le: "aten::le", operator.gt: "aten::gt", operator.ge: "aten::ge",
}
_SYM_OPS = {"aten::sym_size": "aten::size", "aten::sym_numel": "aten::numel"}
_SKIPPED = ("aten::_assert_scalar", "aten::_assert_tensor_metadata", "aten::sym_constrain_range",
            "aten::sym_constrain_range_for_size", "aten::_assert_async")


_HIGHER_ORDER = ("only ATen ops can be translated; higher-order ops (torch.cond, while_loop, a no_grad or "
                 "autocast region inside forward) are not supported")


_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


class ExportError(RuntimeError):
    pass


def _location(node):
    """(path, line, code) of the model's source that made the node: the
    innermost frame of its stack trace outside torch itself (the model's
    `self.conv1(x)` rather than torch/nn/modules/conv.py), or None."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', trace)
    if not frames:
        return None
    outside = [f for f in frames if not f[0].startswith(_TORCH_DIR) and not f[0].startswith("<")]
    path, line, code = (outside or frames)[-1]
    return path, line, code.strip()


def _where(node):
    loc = _location(node)
    return "node '%s' (%s)%s" % (node.name, _target_name(node), " at %s:%s: %s" % loc if loc else "")


def _target_name(node):
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return "%s.%s" % (t._schema.name, t._overloadname)
    return getattr(t, "__name__", str(t))


def _float_text(x):
    return "%.17e" % x


class _Writer:
    """One graph's IR text."""

    def __init__(self):
        self.lines = []
        self.count = 0
        self.locations = {}

    def fresh(self, hint="v"):
        self.count += 1
        return "%s_%d" % (re.sub(r"\W", "_", hint), self.count)

    def emit(self, outputs, op, inputs=(), attr=""):
        """outputs: [(name, type)]."""
        lhs = ", ".join("%%%s : %s" % (n, t) for n, t in outputs)
        self.lines.append("  %s = %s%s(%s)" % (lhs, op, attr, ", ".join("%" + i for i in inputs)))

    def constant(self, value, where):
        name = self.fresh("c")
        if value is None:
            self.emit([(name, "NoneType")], "prim::Constant")
        elif isinstance(value, bool):
            self.emit([(name, "bool")], "prim::Constant", attr="[value=%d]" % value)
        elif isinstance(value, int):
            self.emit([(name, "int")], "prim::Constant", attr="[value=%d]" % value)
        elif isinstance(value, float):
            if math.isfinite(value):
                self.emit([(name, "float")], "prim::Constant", attr="[value=%s]" % _float_text(value))
            else:  # the IR text has no literal for inf / nan: float("inf")
                text = self.constant("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"), where)
                self.emit([(name, "float")], "aten::Float", [text])
        elif isinstance(value, str):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            self.emit([(name, "str")], "prim::Constant", attr='[value="%s"]' % escaped)
        elif isinstance(value, torch.dtype):
            if value not in _DTYPES:
                raise ExportError("%s: dtype %s is not supported" % (where, value))
            return self.constant(_DTYPES[value], where)
        elif isinstance(value, torch.layout):
            return self.constant(_LAYOUTS[value], where)
        elif isinstance(value, torch.memory_format):
            return self.constant(_MEMORY_FORMATS[value], where)
        elif isinstance(value, torch.device):
            self.emit([(name, "Device")], "prim::Constant", attr='[value="%s"]' % value)
        else:
            raise ExportError("%s: a constant of type %s cannot be translated" % (where, type(value).__name__))
        return name


def _value_type(value):
    """The TorchScript type of an argument already translated, for list
    element types."""
    if isinstance(value, torch.fx.Node):
        val = value.meta.get("val")
        if isinstance(val, torch.Tensor):
            return "Tensor"
        if isinstance(val, torch.SymFloat) or isinstance(val, float):
            return "float"
        if isinstance(val, torch.SymBool) or isinstance(val, bool):
            return "bool"
        return "int"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return None


def _ts_type(jit_type):
    """A schema type as TorchScript IR text spells it: int[], Tensor?, ..."""
    kind = jit_type.kind()
    if kind == "OptionalType":
        return _ts_type(jit_type.getElementType()) + "?"
    if kind == "ListType":
        return _ts_type(jit_type.getElementType()) + "[]"
    if kind == "TupleType":
        return "(%s)" % ", ".join(_ts_type(e) for e in jit_type.elements())
    return {"SymIntType": "int", "SymFloatType": "float", "SymBoolType": "bool"}.get(kind, str(jit_type))


class _Translator:
    def __init__(self, program, what):
        self.program = program
        self.what = what
        self.w = _Writer()
        self.env = {}      # fx node -> IR value name (or a list of names for multi-output nodes)
        self.state = []    # state_dict names of the graph inputs after the user inputs
        self.user_inputs = []

    def run(self):
        sig = self.program.graph_signature
        specs = {spec.arg.name: spec for spec in sig.input_specs if hasattr(spec.arg, "name")}
        if getattr(sig, "buffers_to_mutate", None) or getattr(sig, "user_inputs_to_mutate", None):
            mutated = list(getattr(sig, "buffers_to_mutate", {}).values()) + list(
                getattr(sig, "user_inputs_to_mutate", {}).values())
            raise ExportError("%s: the program is functional (it returns the new values of %s); actnn "
                              "translates torch.export's training IR, where batch norm updates its running "
                              "statistics in place: export with torch.export.export, without run_decompositions"
                              % (self.what, ", ".join(mutated[:4])))
        state_inputs = []
        for node in self.program.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = specs.get(node.name)
            kind = spec.kind.name if spec is not None else "USER_INPUT"
            if kind == "USER_INPUT":
                if not isinstance(node.meta.get("val"), torch.Tensor):
                    raise ExportError("%s: input '%s' is not a tensor; actnn.compile's capture='export' "
                                      "takes tensor inputs only" % (self.what, node.name))
                self.user_inputs.append(node)
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                if kind == "BUFFER" and spec.persistent is False:
                    kind = "NONPERSISTENT_BUFFER"  # not in the state_dict (BERT's position_ids)
                state_inputs.append((node, kind, spec.target))
            else:
                raise ExportError("%s: input '%s' is a %s, which actnn cannot translate"
                                  % (self.what, node.name, kind.lower().replace("_", " ")))
        header = []
        for node in self.user_inputs:
            name = self.w.fresh(node.name)
            self.env[node] = name
            header.append("%%%s : Tensor" % name)
        for node, kind, target in state_inputs:
            name = self.w.fresh(node.name)
            self.env[node] = name
            header.append("%%%s : Tensor" % name)
            self.state.append((target, kind))
        for node in self.program.graph.nodes:
            if node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                result = self.output(node)
            elif node.op == "get_attr":  # a subgraph of a higher-order op
                users = [_where(user) for user in node.users] or [_where(node)]
                raise ExportError("%s: %s: %s" % (self.what, users[0], _HIGHER_ORDER))
            elif node.op != "placeholder":
                raise ExportError("%s: %s: %s nodes cannot be translated" % (self.what, _where(node), node.op))
        text = "graph(%s):\n%s\n  return (%%%s)\n" % (", ".join(header), "\n".join(self.w.lines), result)
        return text

    def arg(self, value, jit_type, where):
        """The IR value name of one argument."""
        if isinstance(value, torch.fx.Node):
            name = self.env.get(value)
            if name is None or isinstance(name, list):
                raise ExportError("%s: argument '%s' has no single value" % (where, value.name))
            return name
        if isinstance(value, (list, tuple)):
            element = None
            if jit_type is not None and jit_type.kind() == "OptionalType":
                jit_type = jit_type.getElementType()
            if jit_type is not None and jit_type.kind() == "ListType":
                element = jit_type.getElementType()
            items = [self.arg(v, element, where) for v in value]
            if element is not None:
                type_text = _ts_type(element)
            else:
                kinds = {_value_type(v) for v in value} - {None}
                type_text = kinds.pop() if len(kinds) == 1 else "Tensor"
            name = self.w.fresh("l")
            self.w.emit([(name, type_text + "[]")], "prim::ListConstruct", items)
            return name
        return self.w.constant(value, where)

    def call(self, node):
        where = "%s: %s" % (self.what, _where(node))
        target = node.target
        if target in _INT_OPS:
            args = [self.arg(a, None, where) for a in node.args]
            out_type = _value_type(node) or "int"
            name = self.w.fresh(node.name)
            self.w.emit([(name, out_type)], _INT_OPS[target], args)
            self.env[node] = name
            return
        if target is operator.getitem:
            source, index = node.args
            outputs = self.env.get(source)
            if not isinstance(outputs, list):
                raise ExportError("%s: getitem of a value that is not a tuple or list of tensors" % where)
            self.env[node] = outputs[index]
            return
        if not isinstance(target, torch._ops.OpOverload):
            raise ExportError("%s: %s" % (where, _HIGHER_ORDER))
        schema = target._schema
        op = schema.name
        if op in _SKIPPED:
            return
        op = _SYM_OPS.get(op, op)
        inputs = []
        for i, a in enumerate(schema.arguments):
            if i < len(node.args) and not a.kwarg_only:
                value = node.args[i]
            elif a.name in node.kwargs:
                value = node.kwargs[a.name]
            elif a.has_default_value():
                value = a.default_value
            else:
                raise ExportError("%s: argument '%s' of %s is missing" % (where, a.name, op))
            inputs.append(self.arg(value, a.type, where))
        returns = schema.returns
        name = self.w.fresh(node.name)
        if len(returns) == 1 and _ts_type(returns[0].type) == "Tensor[]":
            # split / unbind / chunk: the list, then its elements.
            val = node.meta.get("val")
            self.w.emit([(name, "Tensor[]")], op, inputs)
            items = [self.w.fresh(node.name) for _ in range(len(val))]
            self.w.emit([(n, "Tensor") for n in items], "prim::ListUnpack", [name])
            self.env[node] = items
        elif len(returns) == 1:
            self.w.emit([(name, _ts_type(returns[0].type))], op, inputs)
            self.env[node] = name
        else:
            names = [self.w.fresh(node.name) for _ in returns]
            self.w.emit([(n, _ts_type(r.type)) for n, r in zip(names, returns)], op, inputs)
            self.env[node] = names
            name = names[0]
        location = _location(node)
        if location:
            self.w.locations[name] = location

    def output(self, node):
        leaves = list(node.args[0])
        where = "%s: output" % self.what
        values = iter([(self.arg(leaf, None, where), _value_type(leaf) or "NoneType") for leaf in leaves])
        return self.rebuild(self.program.call_spec.out_spec, values)[0]

    def rebuild(self, spec, values):
        """(name, type) of the output rebuilt from its pytree spec."""
        if spec.is_leaf():
            return next(values)
        specs = spec.children() if hasattr(spec, "children") else spec.children_specs
        children = [self.rebuild(child, values) for child in specs]
        types = [t for _, t in children]
        name = self.w.fresh("out")
        kind = spec.type
        if kind is collections.namedtuple:  # pytree's marker; the class is the context
            kind = spec.context
        if isinstance(kind, type) and issubclass(kind, dict):
            keys = spec.context
            if not all(isinstance(k, str) for k in keys) or len(set(types)) > 1:
                raise ExportError("%s: the output is a dict whose keys are not all strings or whose values "
                                  "are not all of one type" % self.what)
            args = []
            for k, (child, _) in zip(keys, children):
                args += [self.w.constant(k, self.what), child]
            out_type = "Dict(str, %s)" % (types[0] if types else "Tensor")
            self.w.emit([(name, out_type)], "prim::DictConstruct", args)
        elif kind is list:
            if len(set(types)) > 1:
                raise ExportError("%s: the output is a list of values of different types" % self.what)
            out_type = "%s[]" % (types[0] if types else "Tensor")
            self.w.emit([(name, out_type)], "prim::ListConstruct", [c for c, _ in children])
        elif isinstance(kind, type) and issubclass(kind, tuple):
            out_type = "(%s)" % ", ".join(types)
            self.w.emit([(name, out_type)], "prim::TupleConstruct", [c for c, _ in children])
        else:
            raise ExportError("%s: the output's structure (%s) cannot be translated; return tensors, "
                              "tuples, lists or dicts of them" % (self.what, getattr(kind, "__name__", kind)))
        return name, out_type


# One ExportedProgram as TorchScript IR: text, the graph; state, [(state_dict
# name, kind)] of its inputs after the user inputs; locations, {IR value name:
# (path, line, code)}; input_names, the user inputs'.
Translation = collections.namedtuple("Translation", "program text state locations input_names")


def translate(program, what):
    t = _Translator(program, what)
    text = t.run()
    return Translation(program, text, t.state, t.w.locations, [node.name for node in t.user_inputs])
