"""``tracker.watch(model, optimizer, loader)``: the forward, backward and optimizer phases of a training loop
that nobody wrapped in ``tracker.span``, from PyTorch's public hooks; the data wait too, given the loader.

Where each phase comes from, and why it is taken there:

- ``forward``: the top module's forward pre-hook to its forward hook, registered with ``always_call`` so
  that a forward that raises still ends its phase (with the error). It is entered like ``tracker.span``:
  the user's own phases and OTel spans inside the model nest under it.
- ``backward``: from the first gradient of the forward's output (a multi-grad hook, mode ``any``, put on
  the output by the forward hook) to the last gradient of the model's trainable parameters (a multi-grad
  hook, mode ``all``, registered once). Module backward hooks cannot tell the end: when the inputs need no
  gradient (a batch of data) PyTorch calls them at the *start* of the module's backward. Autograd runs
  these hooks on its own threads for CUDA tensors, where the training thread's scope stack is not visible,
  so the phase is *detached*: it never enters the stack; its parent is the scope or phase open where the
  backward began (on the training thread) or where the forward ended (elsewhere).
- ``optimizer``: each watched optimizer's step pre-hook to its post-hook, detached the same way, so a step
  that raises (it has no post-hook then) leaves nothing open on the stack; finalize ends it as truncated.
- ``data``: the loader's class becomes a subclass of its own whose ``__iter__`` is ``tracker.iterate``
  (``for batch in loader`` stays as written); ``unwatch`` gives the class back.

torch is never imported here at module level: ``import lezea_otel`` must not load it; ``watch`` runs in a
process that has a model, so torch is there by then.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from lezea_otel import semconv as names
from lezea_otel.trainer.scope_frames import Frame
from lezea_otel.trainer.session import Session
from lezea_otel.util import values
from lezea_otel.util.safety import raise_internal, report_internal_error

Iterate = Callable[[Iterable[Any], str], Iterator[Any]]
Where = tuple[tuple[str, ...], int, int]

_ATTRIBUTES: dict[str, Any] = {names.PHASE_SOURCE: names.SOURCE_TORCH_HOOKS}
"""Shared by every hook phase (never written to: a record copies what it keeps)."""

_watched: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()
"""Every watched model of the process, whichever tracker watches it: a second watch is a warning."""
_loader_iterates: weakref.WeakKeyDictionary[Any, Callable[[Iterable[Any]], Iterator[Any]]] = \
    weakref.WeakKeyDictionary()
_loader_classes: dict[type, type] = {}


def _watched_class(base: type) -> type:
    """``base`` with an ``__iter__`` that times each wait as the ``data`` phase of the loader's tracker;
    the same name and module, so the loader still reads as what it is."""
    made = _loader_classes.get(base)
    if made is None:
        def __iter__(self: Any) -> Iterator[Any]:
            items = base.__iter__(self)  # type: ignore[attr-defined]
            iterate = _loader_iterates.get(self)
            return iterate(items) if iterate is not None else items

        made = type(base.__name__, (base,), {"__iter__": __iter__, "__module__": base.__module__,
                                              "__qualname__": base.__qualname__})
        _loader_classes[base] = made
    return made


def _grad_tensors(output: Any, tensor_type: Any, depth: int = 0) -> list[Any]:
    """The tensors of a forward's output that gradients will flow back through: a tensor, or those in a
    tuple, list or mapping (a Hugging Face ``ModelOutput``), two levels deep at most."""
    if isinstance(output, tensor_type):
        return [output] if output.requires_grad else []
    if depth >= 2:
        return []
    items: Iterable[Any]
    if isinstance(output, Mapping):
        items = output.values()
    elif isinstance(output, (tuple, list)):
        items = output
    else:
        return []
    return [tensor for item in items for tensor in _grad_tensors(item, tensor_type, depth + 1)]


def _unwrapped(optimizer: Any, torch: Any) -> Any:
    """The optimizer whose ``step`` runs: a wrapper (Accelerate's ``AcceleratedOptimizer``) subclasses
    ``Optimizer`` without its hook tables and calls the one it holds, whose hooks then fire."""
    inner = getattr(optimizer, "optimizer", None)
    while isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
        optimizer, inner = inner, getattr(inner, "optimizer", None)
    return optimizer


class _Watch:
    """The hooks on one model (and its optimizers and loader), and the phases they have open."""

    def __init__(self, session: Session, torch: Any) -> None:
        self._session = session
        self._torch = torch
        self._handles: list[Any] = []
        self._loader: Any = None
        self._forwards: list[Frame] = []
        self._backward: Frame | None = None
        self._steps: dict[int, Frame] = {}
        self._lock = threading.Lock()
        self._thread = threading.get_ident()
        self._where_at_forward: Where | None = None
        self._trainable = False
        self.removed = False

    # --- registration ---------------------------------------------------------------------------

    def hook_model(self, model: Any) -> None:
        self._handles.append(model.register_forward_pre_hook(self._forward_began))
        self._handles.append(model.register_forward_hook(self._forward_ended, always_call=True))
        trainable = [p for p in model.parameters() if p.requires_grad]
        if trainable:
            self._trainable = True
            self._handles.append(self._torch.autograd.graph.register_multi_grad_hook(
                trainable, self._backward_ended, mode="all"))

    def hook_optimizer(self, optimizer: Any) -> None:
        self._handles.append(optimizer.register_step_pre_hook(self._step_began))
        self._handles.append(optimizer.register_step_post_hook(self._step_ended))

    def hook_loader(self, loader: Any, iterate: Iterate) -> None:
        base = type(loader)
        loader.__class__ = _watched_class(base)
        _loader_iterates[loader] = lambda items: iterate(items, names.PHASE_DATA)
        self._loader = (loader, base)

    def remove(self) -> None:
        """Every hook off, the loader's class given back; phases still open stay for finalize."""
        self.removed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._loader is not None:
            loader, base = self._loader
            _loader_iterates.pop(loader, None)
            loader.__class__ = base
            self._loader = None

    # --- the hooks (never raise into training: an internal error costs telemetry only) ----------

    def _forward_began(self, module: Any, args: Any) -> None:
        try:
            self._forwards.append(self._session.enter_block(None, names.PHASE_FORWARD, _ATTRIBUTES))
        except Exception as error:
            self._internal(error)

    def _forward_ended(self, module: Any, args: Any, output: Any) -> None:
        end_ns = time.time_ns()  # the first thing on exit: the hook's own cost is not in the phase
        if not self._forwards:
            return
        error = sys.exc_info()[1] if output is None else None  # always_call: the forward raised
        try:
            self._session.exit_block(self._forwards.pop(), error, None, end_ns)
            self._thread = threading.get_ident()
            self._where_at_forward = self._session.where()
            if error is None and self._trainable and self._torch.is_grad_enabled():
                tensors = _grad_tensors(output, self._torch.Tensor)
                if tensors:
                    self._torch.autograd.graph.register_multi_grad_hook(
                        tensors, self._backward_began, mode="any")
        except Exception as internal:
            self._internal(internal)

    def _backward_began(self, grad: Any) -> None:
        if self.removed:
            return
        try:
            on_training_thread = threading.get_ident() == self._thread
            where = self._session.where() if on_training_thread else self._where_at_forward
            frame = self._session.open_detached(names.PHASE_BACKWARD, where or self._session.where(),
                                                _ATTRIBUTES)
            with self._lock:
                stale, self._backward = self._backward, frame
            if stale is not None:  # a backward that never reached the parameters: no phase
                self._session.discard_block(stale)
        except Exception as error:
            self._internal(error)

    def _backward_ended(self, grads: Any) -> None:
        end_ns = time.time_ns()
        with self._lock:
            frame, self._backward = self._backward, None
        if frame is not None:
            try:
                self._session.exit_block(frame, None, None, end_ns)
            except Exception as error:
                self._internal(error)

    def _step_began(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            self._steps[id(optimizer)] = self._session.open_detached(names.PHASE_OPTIMIZER,
                                                                     self._session.where(), _ATTRIBUTES)
        except Exception as error:
            self._internal(error)

    def _step_ended(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        end_ns = time.time_ns()
        frame = self._steps.pop(id(optimizer), None)
        if frame is not None:
            try:
                self._session.exit_block(frame, None, None, end_ns)
            except Exception as error:
                self._internal(error)

    def _internal(self, error: Exception) -> None:
        if raise_internal():
            raise error
        report_internal_error("watch", error)


class Watches:
    """``watch`` and ``unwatch`` of one tracker: the facade delegates to these."""

    def __init__(self, session: Session, iterate: Iterate) -> None:
        self._session = session
        self._iterate = iterate
        self._mine: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()

    def watch(self, model: Any, optimizer: Any = None, loader: Any = None) -> None:
        """See ``ExperimentTracker.watch``."""
        warn = self._session.warner("watch")
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(model, torch.nn.Module):
            warn("model is not a torch.nn.Module", f"got {values.describe(model)}; nothing is watched")
            return
        if model in _watched:
            warn("model is watched already", "its phases are recorded once; call unwatch(model) first "
                 "to watch it again")
            return
        optimizers = self._optimizers(optimizer, torch, warn)
        hooks = _Watch(self._session, torch)
        hooks.hook_model(model)
        for each in optimizers:
            hooks.hook_optimizer(each)
        if loader is not None and loader in _loader_iterates:
            warn("loader is watched already", "its waits are timed once, for the model watched first")
        elif loader is not None:
            try:
                hooks.hook_loader(loader, self._iterate)
            except TypeError:  # a list, a generator: its class cannot be extended
                warn("loader cannot be watched", f"a {type(loader).__name__} cannot take a subclass; "
                     "iterate it with tracker.iterate(loader) to time its waits")
        _watched[model] = self._mine[model] = hooks

    def unwatch(self, model: Any = None) -> None:
        """See ``ExperimentTracker.unwatch``."""
        if model is None:
            for each in list(self._mine.keys()):
                self._remove(each)
            return
        try:
            mine = model in self._mine
        except TypeError:  # unhashable: cannot be a watched module
            mine = False
        if not mine:
            self._session.warnings.warn("unwatch", "model is not watched by this tracker",
                                        f"got a {type(model).__name__}; nothing to remove")
            return
        self._remove(model)

    def _remove(self, model: Any) -> None:
        hooks = self._mine.pop(model)
        hooks.remove()
        if _watched.get(model) is hooks:
            del _watched[model]

    @staticmethod
    def _optimizers(optimizer: Any, torch: Any, warn: values.Warn) -> list[Any]:
        """``optimizer`` as a list of optimizers: one, several (a GAN's two), or none."""
        if optimizer is None:
            return []
        given = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        usable = [_unwrapped(each, torch) for each in given if isinstance(each, torch.optim.Optimizer)]
        if len(usable) != len(given):
            warn("optimizer is not a torch.optim.Optimizer",
                 f"got {values.describe(optimizer)}; only the optimizers in it are watched")
        return usable
