"""Load a model factory named on the command line as ``PATH.py:FACTORY``."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Callable

from ..errors import VarpropError, abbreviate

__all__ = ["FactoryError", "load_factory"]


class FactoryError(VarpropError):
    """A ``PATH.py:FACTORY`` that does not name a callable in a readable Python file."""


def load_factory(target: str) -> tuple[Callable[[], object], str]:
    """The callable ``FACTORY`` defined in the Python file ``PATH.py`` (the file is run as a module), and its label.

    The file is the user's own model code: running it is the point. Any exception it raises is
    reported as a :class:`FactoryError` naming the file.
    """
    path_text, colon, name = str(target).rpartition(":")
    if not colon or not path_text or not name:
        raise FactoryError(f"expected PATH.py:FACTORY (a Python file and a function in it), got {abbreviate(target)}")
    path = pathlib.Path(path_text)
    if path.suffix != ".py":
        raise FactoryError(f"the model file must be a .py file, got {abbreviate(path_text)}")
    if not path.is_file():
        raise FactoryError(f"no such model file: {abbreviate(path_text)}")
    if not name.isidentifier():
        raise FactoryError(f"FACTORY must be a Python name, got {abbreviate(name)}")
    module_name = f"_varprop_audit_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise FactoryError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise FactoryError(f"running {path} raised {type(exc).__name__}: {str(exc)[:300]}") from None
    factory = getattr(module, name, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", None) == module_name)
        raise FactoryError(f"{path} defines no {name!r}; its functions and classes: {', '.join(public) or 'none'}")
    if not callable(factory):
        raise FactoryError(f"{path}:{name} is not callable (it is {type(factory).__name__}); name a function or class returning a model")
    return factory, f"{path}:{name}"
