"""The module paths of jaxkde 0.1.0, kept importable for one release (remove at 0.2).

jaxkde 0.1.0 had 28 flat modules; they now live in the subpackages ``core``, ``scale``,
``bandwidth``, ``stats``, ``variants``, ``estimator`` and ``apps``. Each old path is an alias
of its new module in ``sys.modules`` and on the package, so ``import jaxkde.selectors``,
``from jaxkde.datasets import load_mnist`` and pickles that name ``jaxkde.kde.KDE`` keep
working. Definitions that changed module are found at the old path only where their new
module imports them. Only ``jaxkde/__init__.py`` imports this module, last.
"""

import importlib
import sys

#: Old module name -> its new module.
OLD_PATHS = {
    "kernels": "jaxkde.core.kernels",
    "state": "jaxkde.core.state",
    "engine": "jaxkde.core.engine",
    "sum_updating": "jaxkde.core.sum_updating",
    "sampling": "jaxkde.core.sampling",
    "sharding": "jaxkde.core.sharding",
    "moments": "jaxkde.core.moments",
    "distributed": "jaxkde.scale.distributed",
    "streaming": "jaxkde.scale.streaming",
    "bandwidths": "jaxkde.bandwidth.rules",
    "selectors": "jaxkde.bandwidth.selectors",
    "selection": "jaxkde.bandwidth.learned",
    "scale_search": "jaxkde.bandwidth.scale_search",
    "grid": "jaxkde.stats.grid",
    "probability": "jaxkde.stats.probability",
    "geometry": "jaxkde.stats.geometry",
    "marginals": "jaxkde.stats.marginals",
    "bounds": "jaxkde.variants.bounds",
    "adaptive": "jaxkde.variants.adaptive",
    "conditional": "jaxkde.variants.classes",
    "kde": "jaxkde.estimator.kde",
    "cli": "jaxkde.apps.cli",
    "digits": "jaxkde.apps.digits",
    "datasets": "jaxkde.apps.datasets",
    "pca": "jaxkde.apps.pca",
    "plot": "jaxkde.apps.plot",
}


def install_aliases(package) -> None:
    """Point ``jaxkde.<old>`` at the new module, in ``sys.modules`` and on ``package``."""
    for old, new in OLD_PATHS.items():
        module = importlib.import_module(new)
        sys.modules[f"{package.__name__}.{old}"] = module
        if not hasattr(package, old):
            setattr(package, old, module)
