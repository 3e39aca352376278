"""Named hook points, and one way to use them: `with hooks.attached(module, hx=fn): ...`.

Every activation a researcher may read or patch passes through a `HookPoint` attribute named `hook_<name>`:
the agent's `features`, `hx`, `logits` and `value` (`rlinterp/agent/model.py`), and the simulator's `env_h`
(deterministic state), `frame` (decoded frame) and `action` (one-hot fed to the next step)
(`rlinterp/simulator/model.py`). The agent's points fire in the real environment and inside the simulated
loop alike, so one hook serves both.

`attached(module, name=fn, ...)` calls `fn(step, tensor)` at every pass through `module.hook_<name>` while the
block runs; `step` counts that point's passes since entering (one per environment or simulated step; a
sequence forward passes all its steps at once). A fn that returns a tensor replaces the activation, one that
returns None only reads it. The hooks are removed on leaving the block, also after an error.
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator

import torch
from torch import nn

HookFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


class HookPoint(nn.Identity):
    """An identity module marking a named activation; `attached` reads or patches it."""


def hook_points(module: nn.Module) -> list[str]:
    """The names of `module`'s own hook points (`hx` for `module.hook_hx`)."""
    return [name.removeprefix("hook_") for name, child in module.named_children() if isinstance(child, HookPoint)]


@contextlib.contextmanager
def attached(module: nn.Module, **fns: HookFn) -> Iterator[None]:
    """Attach `fn(step, tensor) -> tensor | None` to each named hook point of `module` for the block."""
    handles = []
    try:
        for name, fn in fns.items():
            point = getattr(module, f"hook_{name}", None)
            if not isinstance(point, HookPoint):
                raise ValueError(f"{type(module).__name__} has no hook point {name!r} "
                                 f"(it has: {', '.join(hook_points(module))})")
            calls = itertools.count()

            def hook(_module, _inputs, output, fn=fn, calls=calls):
                result = fn(next(calls), output)
                return output if result is None else result
            handles.append(point.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
