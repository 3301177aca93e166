"""Explaining why the exporter failed, in one paragraph.

The dynamo exporter fails deep inside torch.export or the ONNX translation, with long chained
tracebacks that rarely name the user's code. The exception chain's messages (matched by regex)
and its frames' locals (the graph node being translated, the module whose code ran) say which
op, graph node, module and source line failed, and what to change.
"""

from __future__ import annotations

import inspect
import re
from typing import Iterator

import torch
from torch import nn

from ..common import is_library_file, xd_layers

_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>(?:\. Failure message: ([^\n]*))?")
_NODE = re.compile(r"Error when translating node %(\w+) : .*?call_function\[target=([\w.:]+)\]")
_STATIC = re.compile(r"inferred a static shape of (\d+) for dimension inputs\[['\"]?(\w+)['\"]?\](?:\[(\d+)\])?\.shape\[0\]")
_CALL_MODULE = re.compile(r"While executing %(\w+) : .*?call_module\[target=([\w.]+)\]")
_USER_CALL = re.compile(r"The following call raised this error:\s*\n\s*File \"([^\"]+)\", line (\d+), in (\w+)\n\s*([^\n]+)")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _frames(exc: BaseException) -> Iterator:
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _failing_fx_node(excs: list[BaseException]) -> torch.fx.Node | None:
    """The exported-graph node being translated when the exporter failed (from its frames)."""
    for exc in excs:
        found = None
        for frame in _frames(exc):
            node = frame.f_locals.get("node")
            if isinstance(node, torch.fx.Node):
                found = node
        if found is not None:
            return found
    return None


def _failing_module(model: nn.Module, excs: list[BaseException]) -> tuple[str, nn.Module] | None:
    """The innermost submodule of ``model`` whose code was running when tracing failed."""
    names = {id(m): n for n, m in model.named_modules()}
    best = None
    for exc in excs:
        for frame in _frames(exc):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names and not is_library_file(frame.f_code.co_filename, torch_only=True):
                best = (names[id(owner)], owner)
    return best


def _called_module(model: nn.Module, text: str) -> tuple[str, nn.Module] | None:
    """The submodule a ``call_module`` node was running when the messages in ``text`` were raised."""
    m = _CALL_MODULE.search(text)
    if not m:
        return None
    try:
        return m.group(2), model.get_submodule(m.group(2))
    except AttributeError:
        return None


def _module_label(where: tuple[str, nn.Module]) -> str:
    return f"module {where[0]!r} ({type(where[1]).__name__})"


def _module_of(model: nn.Module, node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, cls = list(stack.values())[-1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path))
    try:
        cls = type(model.get_submodule(path)).__name__
    except AttributeError:
        cls = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].rstrip("'>")
    return f"module {path or '<root>'!r} ({cls})"


def _source_of(node: torch.fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    where = re.match(r'File "([^"]+)", line (\d+)', lines[-2]) if len(lines) >= 2 else None
    return f", `{lines[-1]}` at {where.group(1)}:{where.group(2)}" if where else ""


def _is_data_dependent(excs: list[BaseException]) -> bool:
    return any(
        "GuardOnDataDependentSymNode" in type(e).__name__ or "data-dependent" in str(e) or "DataDependent" in type(e).__name__
        for e in excs
    )


def _data_dependent(model: nn.Module, excs: list[BaseException], text: str) -> str:
    """The module and source line that branch on a tensor's value, and how to rewrite them."""
    where = _called_module(model, text) or _failing_module(model, excs)
    code = _USER_CALL.search(text)
    loc = f" (`{code.group(4).strip()}` at {code.group(1)}:{code.group(2)})" if code else ""
    mod = _module_label(where) if where else "the model"
    return (
        f"{mod} has data-dependent control flow{loc}: a Python branch on the value of a tensor. "
        "torch.export (and so ONNX) records one path through the code, so no graph exists that computes it "
        "for every input. Rewrite the branch with torch.where(...) or torch.cond(...) to export it"
    )


def _translation(model: nn.Module, excs: list[BaseException], text: str) -> str | None:
    """The op, graph node, module and source line the ONNX translation failed on (None if unknown)."""
    op = _OP.search(text)
    node = _failing_fx_node(excs)
    nm = _NODE.search(text)
    if not (op or nm or node is not None):
        return None
    target = f"{op.group(1)}.{op.group(2)}" if op else (nm.group(2) if nm else str(getattr(node, "target", "?")))
    target = target.removeprefix("torch.ops.")
    name = node.name if node is not None else (nm.group(1) if nm else "?")
    where = ""
    if node is not None:
        mod = _module_of(model, node)
        where = (f" in {mod}" if mod else "") + _source_of(node)
    if op:
        reason = f" ({op.group(3).strip()})" if op.group(3) else ""
        return f"the exporter has no ONNX translation for op {target} (graph node %{name}{where}){reason}"
    inner = excs[-1]
    first = (str(inner).strip().splitlines() or [""])[0]
    return f"the exporter failed to translate op {target} (graph node %{name}{where}): {type(inner).__name__}: {first}"


def _other(model: nn.Module, excs: list[BaseException]) -> str:
    """The last line of the innermost message that has one, and the module whose code raised it."""
    summary = next((str(e).strip().splitlines()[-1] for e in reversed(excs) if str(e).strip()), type(excs[0]).__name__)
    where = _failing_module(model, excs)
    mod = f" in {_module_label(where)}" if where else ""
    return f"torch.onnx.export failed{mod}: {type(excs[-1]).__name__}: {summary}"


def _xd_hint(model: nn.Module) -> str | None:
    xd = [f"{n or '<root>'!r} ({type(m).__name__})" for n, m in xd_layers(model).items()]
    if not xd:
        return None
    return (
        f"The model still contains XD layers ({', '.join(xd[:4])}{', ...' if len(xd) > 4 else ''}): "
        "xdfx.harden(model, example_inputs=...) replaces them with standard operators, which is also what "
        "to export for serving"
    )


def explain(model: nn.Module, exc: BaseException) -> str:
    """A one-paragraph account of an exporter failure: which op, node and module, and what to do."""
    excs = _chain(exc)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in excs)
    if _is_data_dependent(excs):
        cause = _data_dependent(model, excs, text)
    else:
        cause = _translation(model, excs, text) or _other(model, excs)
    parts = [cause, _xd_hint(model)]
    return "xdfx.export.onnx: " + ". ".join(p for p in parts if p) + "."


def static_inputs(model: nn.Module, args: tuple, exc: BaseException) -> set[int] | None:
    """Positions of the inputs whose dimension 0 the model fixes (from the exporter's message)."""
    hits = [m for e in _chain(exc) for m in _STATIC.finditer(str(e))]
    if not hits:
        return None
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    out = set()
    for m in hits:
        name = m.group(2)
        if name in params and params.index(name) < len(args):
            out.add(params.index(name))
        else:  # a name we cannot map (varargs): keep every input static
            return {i for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
    return out
