"""Module: the base of every layer: parameters, train/eval, state dicts, files.

Attributes that are Parameters or Modules are found automatically, in the
order they were assigned, and named with dots ("0.weight", "block.bn.bias"),
as in PyTorch. Buffers (batch-norm running statistics) are saved with the
parameters but never trained.
"""
from __future__ import annotations

import zipfile
from collections import OrderedDict

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad is on."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)


class Module:
    """Base class: subclasses set layers and Parameters as attributes and define forward()."""

    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ discovery
    def register_buffer(self, name, array):
        """A saved, untrained array (e.g. running mean), reachable as self.<name>."""
        self.__dict__.setdefault("_buffers", {})[name] = None
        setattr(self, name, np.asarray(array))

    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [module for _, module in self.named_children()]

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}{name}.")

    def modules(self):
        return [module for _, module in self.named_modules()]

    def named_parameters(self):
        seen = set()
        for prefix, module in self.named_modules():
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield prefix + name, value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name in module.__dict__.get("_buffers", ()):
                yield prefix + name, getattr(module, name)

    # ------------------------------------------------------------ modes
    def train(self, mode=True):
        """Training mode: dropout drops, batch norm uses and updates batch statistics."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        """Inference mode: dropout off, batch norm uses its running statistics."""
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------ state
    def state_dict(self):
        """Name -> copy of every parameter and buffer."""
        state = OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())
        state.update((name, np.array(b, copy=True)) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state):
        """Copy arrays into this model; names and shapes must match exactly."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise KeyError(f"load_state_dict: state does not fit {type(self).__name__}: "
                           f"missing {missing}, unexpected {unexpected}")
        for name, value in own.items():
            given = np.asarray(state[name])
            if given.shape != value.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {given.shape} in the "
                                 f"state, the model has {value.shape}")
        params = dict(self.named_parameters())
        for prefix, module in self.named_modules():
            for name in module.__dict__.get("_buffers", ()):
                setattr(module, name, np.array(state[prefix + name], dtype=own[prefix + name].dtype))
        for name, p in params.items():
            p.data = np.array(state[name], dtype=p.dtype)

    def save(self, path):
        """Write the state dict to `path` (numpy .npz format, exactly that file name)."""
        with open(path, "wb") as f:
            np.savez(f, **self.state_dict())

    def load(self, path):
        """Read a file written by save() into this model."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                state = {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"no saved model at {path}") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path} is not a model file written by Module.save() "
                             f"({exc})") from None
        self.load_state_dict(state)
        return self

    def __repr__(self):
        children = [f"  ({name}): " + repr(child).replace("\n", "\n  ")
                    for name, child in self.named_children()]
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}({extra}\n" + "\n".join(children) + "\n)"

    def extra_repr(self):
        return ""
