"""The scikit-learn protocol shared by the estimators: parameters, repr, tags, pickling."""

from __future__ import annotations

import inspect
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxkde.estimator import files
from jaxkde.estimator.evaluation import check_local

__all__ = ["Params"]


class Params:
    """get_params / set_params / repr from the ``__init__`` signature (scikit-learn protocol)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [name for name in sig.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Parameters of this estimator, as passed to ``__init__``."""
        del deep
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set parameters (validated at the next ``fit``); returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters: {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults[name]
            same = value is default or (
                isinstance(value, (str, numbers.Number))
                and type(value) is type(default)
                and value == default
            )
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    # --------------------------------------------------------------- scikit-learn protocol
    # scikit-learn is optional: it is imported here only when scikit-learn itself asks.
    _estimator_type: str | None = None

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        classifier = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=classifier),
            transformer_tags=None,
            classifier_tags=ClassifierTags() if classifier else None,
            regressor_tags=None,
            input_tags=InputTags(),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return any(name in self.__dict__ for name in ("state_", "_lazy_state", "kde_"))

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(cls._param_names())

    def __getattr__(self, name: str):
        # A fit's layout is built on first use (jaxkde.core.state.LazyState): ``state_`` then.
        lazy = self.__dict__.get("_lazy_state")
        if name == "state_" and lazy is not None:
            self.__dict__["state_"] = lazy.state
            del self.__dict__["_lazy_state"]
            return self.__dict__["state_"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict:
        # Devices do not pickle: the state is gathered to the host and the mesh dropped, so a
        # loaded model evaluates on one device.
        check_local(self.__dict__.get("state_"), "pickling")
        if "_lazy_state" in self.__dict__:
            self.state_  # noqa: B018 -- a pickle holds the laid-out state
        state = self.__dict__.copy()
        if "mesh" in state:
            state["mesh"] = state["_fit_mesh"] = None
        if "state_" in state:
            state["state_"] = jax.tree.map(np.asarray, state["state_"])
        if "_sorted" in state:  # a cache, rebuilt at the next call
            state["_sorted"] = None
        state.pop("_sampling_scales", None)  # a cache of device arrays, rebuilt likewise
        if state.get("_images") is not None:
            state["_images"] = tuple((jax.tree.map(np.asarray, s), w) for s, w in state["_images"])
        return state

    def save(self, path) -> None:
        """Write the fitted estimator to ``path`` as a safe, versioned ``.npz`` model file
        (:mod:`jaxkde.estimator.files`): read back by :func:`jaxkde.load`, which runs no code
        from the file, unlike ``pickle``. Scores and samples of the loaded estimator equal
        this one's bit for bit. The file is written atomically (a temporary file, renamed).
        """
        check_local(self.__dict__.get("state_"), "save")
        files.save_estimator(self, path)

    def __setstate__(self, state: dict) -> None:
        if "state_" in state:
            state["state_"] = jax.tree.map(jnp.asarray, state["state_"])
        if state.get("_images") is not None:
            state["_images"] = tuple((jax.tree.map(jnp.asarray, s), w) for s, w in state["_images"])
        self.__dict__.update(state)
