"""The scikit-learn estimator protocol for MOT and ThreeLevelMOT, without importing
scikit-learn.

``import sklearn.base`` takes about a second (it imports SciPy's statistics and pandas),
which every workflow job that fits MOT would pay on start-up although MOT uses nothing of
scikit-learn.  :class:`BaseEstimator` gives what the protocol asks of an estimator:
``get_params`` / ``set_params`` from the constructor's signature (so that
``sklearn.base.clone``, grid searches and pipelines work), and a ``repr`` that shows the
parameters that differ from their defaults.  :func:`check_is_fitted` raises scikit-learn's
own ``NotFittedError`` (imported only then), and :func:`check_random_state` is
scikit-learn's rule (an int seeds a ``RandomState``, so results equal those of
``sklearn.utils.check_random_state``).
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np


class BaseEstimator:
    """Base class with scikit-learn's ``get_params`` / ``set_params`` contract: every
    constructor argument is stored under its own name, unchanged."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        names = []
        for name, parameter in signature.parameters.items():
            if name == "self" or parameter.kind == parameter.VAR_KEYWORD:
                continue
            if parameter.kind == parameter.VAR_POSITIONAL:
                raise TypeError(f"{cls.__name__}: estimators may not take *args in __init__")
            names.append(name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters (and, with ``deep``, those of parameters that are
        estimators themselves, as ``name__param``)."""
        params = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            params[name] = value
        return params

    def set_params(self, **params):
        """Set constructor parameters (``name`` or ``name__param`` of a nested estimator);
        an unknown name is an error naming the valid ones."""
        valid = self._param_names()
        nested = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                 f"valid parameters are {valid}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        shown = []
        for name in self._param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = default is not inspect.Parameter.empty and bool(value == default)
            except (TypeError, ValueError):  # arrays and the like
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def check_is_fitted(estimator, attribute: str) -> None:
    """Raise scikit-learn's ``NotFittedError`` when ``estimator`` has no ``attribute``
    (an attribute that ``fit`` sets)."""
    if not hasattr(estimator, attribute):
        from sklearn.exceptions import NotFittedError  # deferred: only on this error path

        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


def check_random_state(seed):
    """scikit-learn's rule: None -> NumPy's global RandomState, an int -> a new
    ``RandomState(seed)``, a ``RandomState`` or ``Generator`` -> itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    raise ValueError(f"random_state must be None, an int, a RandomState or a Generator, got {seed!r}")
