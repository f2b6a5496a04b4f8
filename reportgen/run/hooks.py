"""Reading what a network computes: forward hooks that always clean up.

Every hook and mode change lives in a context manager (try/finally), so an
exception in the middle of a forward pass leaves the model exactly as it was:
no hook attached, ``training`` flags restored.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from reportgen.core.batching import image_slices, join
from reportgen.load.spec import ACTIVATION_KINDS, activation_kind


@contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the block; every module's flag restored after."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class LayerRecorder:
    """Collects the outputs of named modules during a forward pass.

    Use as a context manager: hooks are attached on entry and removed on exit,
    whatever happens in between. ``run(x)`` returns ``{name: output}`` and stops
    the forward pass as soon as the last requested layer has fired, so layers
    early in a deep network cost only the work up to them.

    A module called several times in one forward (weight sharing) is recorded
    at its first call.
    """

    def __init__(self, model: nn.Module, names: list[str], stop_early: bool = True):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(f"no such layers: {missing}")
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.stop_early = stop_early
        self._modules = modules
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._out: dict[str, torch.Tensor] = {}

    def __enter__(self) -> "LayerRecorder":
        try:
            for name in self.names:
                self._handles.append(self._modules[name].register_forward_hook(self._hook(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if name in self._out:
                return
            if isinstance(output, (tuple, list)):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer '{name}' returned {type(output).__name__}, not a tensor")
            # A copy: an in-place activation after this module (ReLU(inplace=True)) would
            # otherwise overwrite the recorded output before anyone reads it.
            self._out[name] = output.detach().clone()
            if self.stop_early and len(self._out) == len(self.names):
                raise _StopForward

        return hook

    def run(self, x: torch.Tensor, require_all: bool = True) -> dict[str, torch.Tensor]:
        """One forward pass of ``x``; the requested layers' outputs by name.

        With ``require_all=False`` layers that never ran are simply absent, and an
        exception raised by the model after some layers fired is swallowed (used to
        list shapes of whatever a model computes on a dummy input).
        """
        if not self._handles:
            raise RuntimeError("LayerRecorder.run() must be called inside its 'with' block")
        parts = [self._run_one(xs, require_all) for xs in image_slices(self.model, x)]
        return {name: join([p[name] for p in parts]) for name in parts[0] if all(name in p for p in parts)}

    def _run_one(self, x: torch.Tensor, require_all: bool) -> dict[str, torch.Tensor]:
        """One forward pass (of the whole batch, or of one image for a network that takes one at a time)."""
        self._out = {}
        try:
            self.model(x)
        except _StopForward:
            pass
        except Exception:
            if require_all:
                raise
        if not require_all:
            return dict(self._out)
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise RuntimeError(f"layers never ran in the forward pass: {missing}")
        return dict(self._out)


# -- the activation applied after a layer ----------------------------------------------


@dataclass(frozen=True)
class Activation:
    """The activation whose output a layer's statistics describe.

    kind: an ``ACTIVATION_KINDS`` key, 'none' (raw output) or 'module' (a module of another type
    named in the spec). module: the model's module that is applied (its learned parameters,
    e.g. PReLU slopes, included), or None. params: keyword arguments of a functional call found
    in ``forward`` (e.g. ``negative_slope``). source: how it was found, said on the pages.
    """

    kind: str
    source: str
    module: str | None = None
    params: dict = field(default_factory=dict)
    through: tuple[str, ...] = ()  # modules between the layer and the activation (a BatchNorm), applied first
    steps: tuple = ()  # how to replay ``through``: Step per pass-through; empty: call each ``through`` module on x
    gate: bool = False  # the activation is x * module(x) (SiLU or HardSwish written out)
    note: str = field(default="", compare=False)  # with no activation: why none was found (said on the pages)

    @property
    def applied(self) -> bool:
        """Whether ``apply_activation`` changes the captured output."""
        return self.kind != "none" and self.source != "the layer itself"


NO_ACTIVATION = Activation("none", "")


@dataclass(frozen=True)
class Step:
    """One pass-through between a layer and its activation, replayed on the recorded output:
    a call of ``target`` (a module name, a function, or a method name, per ``op``) with the
    recorded tensor at ``position`` and the other arguments ``operands``, each ('attr', dotted
    path of a tensor of the model) or ('const', value)."""

    op: str  # 'module', 'function' or 'method'
    target: object
    position: int = 0
    operands: tuple = ()
    label: str = ""


def _replay(step: Step, modules: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
    args = []
    for kind, value in step.operands:
        if kind == "attr":
            owner, _, attr = value.rpartition(".")
            args.append(getattr(modules[owner], attr))
        else:
            args.append(value)
    args.insert(step.position, x)
    if step.op == "module":
        return modules[step.target](*args)
    if step.op == "function":
        return step.target(*args)
    return getattr(args[0], step.target)(*args[1:])

_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "relu": F.relu, "relu6": F.relu6, "leaky_relu": F.leaky_relu, "elu": F.elu, "selu": F.selu,
    "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish, "mish": F.mish,
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardsigmoid": F.hardsigmoid,
}
# Functional calls recognised in a traced forward, and the names of their positional arguments
# after the input (only constants are kept; 'inplace' is dropped: we never write in place).
_TRACED_FUNCTIONS: dict[object, str] = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu", F.relu6: "relu6",
    F.leaky_relu: "leaky_relu", F.elu: "elu", F.selu: "selu", torch.selu: "selu", F.silu: "silu",
    F.gelu: "gelu", F.hardswish: "hardswish", F.mish: "mish", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh", F.hardsigmoid: "hardsigmoid",
}
_TRACED_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
                   "tanh": "tanh", "tanh_": "tanh"}
_ARG_NAMES = {"leaky_relu": ("negative_slope",), "elu": ("alpha",), "gelu": ("approximate",)}


# Activation modules of converted ONNX graphs (onnx2torch), by class name: their kinds. A Clip
# from 0 to 6 (or to nothing) is converted to nn.ReLU6 (nn.ReLU) already; other bounds stay
# OnnxClip, a clamp, counted as active above 0 like any other module.
_CONVERTED_KINDS = {"OnnxHardSigmoid": "hardsigmoid", "OnnxClip": "module"}


def module_kind(module: nn.Module) -> str | None:
    """The activation kind of a module ('prelu', ...), or None when it is not an activation."""
    for kind, cls_name in ACTIVATION_KINDS.items():
        if isinstance(module, getattr(nn, cls_name)):
            return kind
    return _CONVERTED_KINDS.get(type(module).__name__)


def _module_label(name: str, module: nn.Module) -> str:
    if type(module).__name__ == "OnnxClip":
        return f"module '{name}' (a clamp to [{module.min_val}, {module.max_val}])"
    return f"module '{name}'"


def apply_activation(act: Activation, modules: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` (a layer's captured output, any shape with channels on dim 1) after ``act``."""
    if not act.applied:
        return x
    if act.steps:
        for step in act.steps:
            x = _replay(step, modules, x)
    else:
        for name in act.through:
            x = modules[name](x)
    if act.module is not None and act.gate:
        return x * modules[act.module](x.clone())
    if act.module is not None:
        return modules[act.module](x.clone())  # clone: the module may work in place
    return _FUNCTIONS[act.kind](x, **act.params)


def find_activations(model: nn.Module, layers: list[str]) -> dict[str, Activation]:
    """For each layer, the activation applied to its output in ``model``'s forward.

    A layer that is itself an activation module describes its own output. Otherwise the
    forward is traced with torch.fx (the listed layers kept as leaves) and the layer's output
    is followed, consumer by consumer, through the operations exporters put between a layer and
    its activation: a bias added separately (an add of a constant tensor), identities and
    dropouts (which do nothing in eval mode), a BatchNorm, and other element-wise operations
    with a constant; the first activation met is the one (a module, a functional call such as
    ``F.silu(x)``, a clamp, or SiLU / HardSwish written out as ``x * sigmoid(x)`` /
    ``x * hardsigmoid(x)``), applied after replaying what it went through. Where the output
    feeds several operations, is added to another tensor (a residual) or reaches anything else
    first, no activation is applied and ``note`` says why. Where tracing fails (data-dependent
    control flow, TorchScript) or does not reach the layer, the next module registered beside
    it is used instead.
    """
    modules = dict(model.named_modules())
    out: dict[str, Activation] = {}
    rest = []
    for name in layers:
        kind = module_kind(modules[name])
        if kind is not None:
            out[name] = Activation(kind, "the layer itself")
        else:
            rest.append(name)
    traced = _trace_consumers(model, rest) if rest else {}
    for name in rest:
        out[name] = traced[name] if name in traced else _next_registered(modules, name)
    return out


def _trace_consumers(model: nn.Module, layers: list[str]) -> dict[str, Activation]:
    """Activations read from the torch.fx graph; layers the graph does not show are absent."""
    import torch.fx

    if isinstance(model, torch.jit.ScriptModule):
        return {}
    wanted = set(layers)

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            # onnx2torch's operation modules (a clip, a hard sigmoid, an Add) stay whole, as the
            # converted graph has them, so they can be recognised.
            return (qualname in wanted or type(m).__module__.startswith("onnx2torch")
                    or super().is_leaf_module(m, qualname))

    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any failure to trace means: fall back to module order
        if not isinstance(model, torch.fx.GraphModule):
            return {}
        # A graph module (an ONNX conversion) whose forward cannot be traced again still
        # carries the graph it was built from.
        graph = model.graph
    modules = dict(model.named_modules())
    found: dict[str, Activation] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in wanted or node.target in found:
            continue
        found[node.target] = _follow(node, modules)
    return found


MAX_PASS_THROUGH = 8  # pass-throughs followed before giving up


def _follow(node, modules: dict[str, nn.Module]) -> Activation:
    """The activation reached from ``node``'s output through pass-throughs, or NO_ACTIVATION
    with a note saying where the search stopped."""
    steps: list[Step] = []
    cur = node
    for _ in range(MAX_PASS_THROUGH + 1):
        users = list(cur.users)
        if not users:
            return _none("nothing in the forward uses its output" if cur is node else
                         f"nothing uses the output of {steps[-1].label}", steps)
        if len(users) == 1:
            act = _as_activation(users[0], modules)
            if act is not None:
                return _behind(act, steps)
            if users[0].op == "output":
                return _none(f"it{_via(steps)} is what the model returns; no activation follows it", steps)
            step = _pass_through(users[0], cur, modules)
            if step is None:
                return _none(f"its output{_via(steps)} goes to {_describe(users[0], cur, modules)}, "
                             "not an activation", steps)
            steps.append(step)
            cur = users[0]
            continue
        gated = _gated(cur, users, modules)
        if gated is not None:
            return _behind(gated, steps)
        said = ", ".join(_describe(u, cur, modules) for u in users[:4]) + (" and more" if len(users) > 4 else "")
        return _none(f"its output{_via(steps)} feeds {len(users)} operations ({said}), so no single activation "
                     "follows it", steps)
    return _none(f"no activation within {MAX_PASS_THROUGH} pass-through operations of it", steps)


def _none(note: str, steps: list[Step]) -> Activation:
    return Activation("none", "", note=note)


def _via(steps: list[Step]) -> str:
    return f" (after {', '.join(s.label for s in steps)})" if steps else ""


_ADDS = {"add", "sub", "mul", "div", "truediv"}


def _op_name(node, modules: dict[str, nn.Module]) -> str | None:
    """'add', 'mul', ... for an element-wise binary operation node, else None."""
    import operator

    fns = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
           torch.mul: "mul", operator.truediv: "div", torch.div: "div", torch.true_divide: "div"}
    if node.op == "call_function":
        return fns.get(node.target)
    if node.op == "call_method":
        return node.target if node.target in _ADDS else None
    if node.op == "call_module":
        fn = getattr(modules.get(node.target), "math_op_function", None)  # onnx2torch's OnnxBinaryMathOperation
        if fn is not None:
            return fns.get(fn) or getattr(fn, "__name__", "").lstrip("_").replace("onnx_", "") or None
    return None


def _pass_through(user, cur, modules: dict[str, nn.Module]) -> Step | None:
    """A Step replaying ``user`` when it passes ``cur``'s value on without changing its shape's
    meaning: an identity or dropout, a BatchNorm, or an element-wise op with a constant."""
    import torch.fx

    if user.op == "call_module":
        m = modules.get(user.target)
        if (isinstance(m, (nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm))
                or type(m).__name__ in ("OnnxCopyIdentity", "OnnxIdentity")) and user.args[:1] == (cur,) \
                and len(user.args) == 1:
            return Step("module", user.target, label=f"module '{user.target}'")
    if user.op == "call_method" and user.target in ("contiguous", "clone") and user.args[:1] == (cur,):
        return Step("method", user.target, label=f".{user.target}()")
    op = _op_name(user, modules)
    if op not in ("add", "sub", "mul", "div") or len(user.args) != 2 or user.kwargs:
        return None
    position = 0 if user.args[0] is cur else 1 if user.args[1] is cur else None
    if position is None:
        return None
    other = user.args[1 - position]
    if isinstance(other, torch.fx.Node):
        if other.op != "get_attr":
            return None
        operand = ("attr", other.target)
        what = {"add": "a constant added", "sub": "a constant subtracted", "mul": "a constant scale",
                "div": "a constant divisor"}[op]
    elif isinstance(other, (int, float)):
        operand = ("const", other)
        what = f"{op} {other:g}"
    else:
        return None
    op_fn = user.target if user.op == "call_function" else None
    label = (f"module '{user.target}' ({what}, e.g. a bias exported apart)" if user.op == "call_module" and op == "add"
             else f"module '{user.target}' ({what})" if user.op == "call_module" else what)
    if user.op == "call_module":
        return Step("module", user.target, position, (operand,), label)
    if user.op == "call_function":
        return Step("function", op_fn, position, (operand,), label)
    return Step("method", user.target, 0, (operand,), label) if position == 0 else None


def _describe(user, cur, modules: dict[str, nn.Module]) -> str:
    """A few words on a node that is not followed: what it is and, for an addition of another
    tensor, that it is a residual."""
    import torch.fx

    op = _op_name(user, modules)
    if op == "add" and any(isinstance(a, torch.fx.Node) and a is not cur and a.op != "get_attr" for a in user.args):
        name = f"'{user.target}'" if user.op == "call_module" else "an addition"
        return f"{name}, which adds another tensor (a residual or skip connection)"
    if user.op == "call_module":
        return f"module '{user.target}' ({type(modules[user.target]).__name__})"
    if user.op == "call_function":
        return f"{getattr(user.target, '__name__', str(user.target))}()"
    if user.op == "call_method":
        return f".{user.target}()"
    if user.op == "output":
        return "the model's output"
    return str(user.op)


def _as_activation(node, modules: dict[str, nn.Module]) -> Activation | None:
    """The activation a graph node applies to its first input, or None."""
    import torch.fx

    if node.op == "call_module":
        kind = module_kind(modules[node.target])
        return Activation(kind, _module_label(node.target, modules[node.target]), module=node.target) if kind else None
    if node.op == "call_function":
        kind = _TRACED_FUNCTIONS.get(node.target)
        label = f"F.{kind}" if kind else ""
    elif node.op == "call_method":
        kind = _TRACED_METHODS.get(node.target)
        label = f".{node.target}()" if kind else ""
    else:
        return None
    if kind is None:
        return None
    names = _ARG_NAMES.get(kind, ())
    params = dict(zip(names, node.args[1:]))
    params.update({k: v for k, v in node.kwargs.items() if k in names})
    if any(isinstance(v, torch.fx.Node) for v in params.values()):
        return None  # an argument computed in forward: not something we can replay
    return Activation(kind, f"{label} in forward", params=params)


def _gated(node, users: list, modules: dict[str, nn.Module]) -> Activation | None:
    """SiLU written out as ``x * sigmoid(x)`` and HardSwish as ``x * hardsigmoid(x)`` (how ONNX
    exports store them): the output feeds a (hard) sigmoid and a product of itself with it, and
    nothing else."""
    import operator

    if len(users) != 2:
        return None
    for sig, mul in (users, users[::-1]):
        act = _as_activation(sig, modules)
        if act is None or act.kind not in ("sigmoid", "hardsigmoid"):
            continue
        is_mul = ((mul.op == "call_function" and mul.target in (operator.mul, torch.mul))
                  or (mul.op == "call_method" and mul.target == "mul")
                  or (mul.op == "call_module"
                      and getattr(modules.get(mul.target), "math_op_function", None) in (torch.mul, operator.mul)))
        if not (is_mul and set(mul.args[:2]) == {node, sig} and len(mul.args) == 2):
            continue
        if act.kind == "sigmoid":
            return Activation("silu", "x * sigmoid(x) in forward")
        hs = modules.get(sig.target) if sig.op == "call_module" else None
        if hs is not None and not isinstance(hs, nn.Hardsigmoid):  # onnx2torch's, with its own slope
            return Activation("hardswish", f"x * module '{sig.target}'(x) in forward (HardSwish written out)",
                              module=sig.target, gate=True)
        return Activation("hardswish", "x * hardsigmoid(x) in forward")
    return None


def _is_batchnorm(node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm)


def _behind(act: Activation, steps) -> Activation:
    """``act`` applied after the pass-throughs ``steps`` (Step list, or one BatchNorm's name)."""
    if isinstance(steps, str):
        steps = [Step("module", steps, label=f"module '{steps}'")]
    if not steps:
        return act
    through = tuple(s.target if s.op == "module" else s.label for s in steps)
    return Activation(act.kind, f"{' then '.join(s.label for s in steps)} then {act.source}", module=act.module,
                      params=act.params, through=through, steps=tuple(steps), gate=act.gate)


def _next_registered(modules: dict[str, nn.Module], name: str) -> Activation:
    """The module registered right after ``name`` beside it (or right after a BatchNorm that
    follows it), when that is an activation."""
    parent_name, _, child = name.rpartition(".")
    siblings = list(modules[parent_name].named_children())
    names = [n for n, _ in siblings]
    i = names.index(child)

    def full(j: int) -> str:
        return f"{parent_name}.{siblings[j][0]}" if parent_name else siblings[j][0]

    norm = None
    if i + 2 < len(siblings) and isinstance(siblings[i + 1][1], nn.modules.batchnorm._BatchNorm):
        norm, i = full(i + 1), i + 1
    if i + 1 < len(siblings):
        kind = module_kind(siblings[i + 1][1])
        if kind is not None:
            act = Activation(kind, f"module '{full(i + 1)}' (registration order)", module=full(i + 1))
            return _behind(act, norm) if norm else act
    return Activation("none", "", note="torch.fx cannot trace the model, and the module registered right after "
                      "the layer is not an activation")


def resolve_activation(model: nn.Module, layer: str, wanted: str, found: Activation) -> Activation:
    """The activation for a layer's spec value ``wanted``, given what ``find_activations`` found.

    Raises ValueError with a message for the user when ``wanted`` cannot be applied.
    """
    if wanted == "auto":
        return found
    if wanted == "none":
        return NO_ACTIVATION
    modules = dict(model.named_modules())
    kind = activation_kind(wanted)
    if kind is not None and wanted not in modules:
        if found.kind == kind:
            return Activation(kind, found.source + ", as the spec says", module=found.module, params=found.params,
                              through=found.through, steps=found.steps, gate=found.gate)
        if found.source == "the layer itself" and module_kind(modules[layer]) == kind:
            return found
        if kind == "prelu":
            raise ValueError("a PReLU has learned slopes; name the PReLU module instead "
                             "(e.g. 'activation: features.1'), or use 'auto'")
        return Activation(kind, "the spec")
    if wanted in modules and wanted:
        return Activation(module_kind(modules[wanted]) or "module", f"module '{wanted}', as the spec says",
                          module=wanted)
    import difflib

    close = difflib.get_close_matches(wanted, [*ACTIVATION_KINDS, "auto", "none", *modules], n=1)
    hint = f"did you mean '{close[0]}'?" if close else "'reportgen layers SPEC' lists the model's modules"
    raise ValueError(f"'{wanted}' is neither an activation kind ({', '.join(ACTIVATION_KINDS)}, auto, "
                     f"none) nor a module of the model; {hint}")


def relu_follows(model: nn.Module, name: str) -> bool:
    """True when ``find_activations`` finds a ReLU (or ReLU6) at or after layer ``name``."""
    return find_activations(model, [name])[name].kind in ("relu", "relu6")


@contextmanager
def probing(model: nn.Module, names: list[str]) -> Iterator[dict[str, object]]:
    """Record the first output of each named module, whatever its type, for a dry run.

    Unlike LayerRecorder the hooks never raise: a layer that returns None or a dict is
    recorded as such (so the caller can say which layer did it) and the forward pass
    goes on. Yields the dict that the hooks fill; hooks are removed on exit.
    """
    modules = dict(model.named_modules())
    seen: dict[str, object] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if name not in seen:
                first = output[0] if isinstance(output, (tuple, list)) and output else output
                seen[name] = first.detach() if isinstance(first, torch.Tensor) else first
        return hook

    try:
        for name in dict.fromkeys(names):
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield seen
    finally:
        for h in handles:
            h.remove()
