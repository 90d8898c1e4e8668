"""Built on the estimator: the ``jaxkde`` command, MNIST digits, datasets, PCA, plots and
the Parzen protocol.
"""

from jaxkde.apps.cli import (
    main,
)
from jaxkde.apps.datasets import (
    DATA_DIR_ENV,
    MNIST_FILES,
    MNIST_MIRRORS,
    DatasetError,
    load_mnist,
    mnist_available,
    mnist_cache_dir,
    read_idx,
)
from jaxkde.apps.digits import (
    INTENSITIES,
    KEEP,
    SOURCES,
    DigitSamples,
    InpaintedDigits,
    IntensityMap,
    apply_intensity_map,
    digit_grid,
    digit_pairs_grid,
    inpaint_digits,
    intensity_map,
    observed_mask,
    sample_digits,
)
from jaxkde.apps.parzen import (
    ParzenResult,
    parzen_log_likelihood,
)
from jaxkde.apps.pca import (
    PCAState,
    pca_fit,
    pca_inverse_transform,
    pca_transform,
)
from jaxkde.apps.plot import (
    density_band,
    density_contours,
    density_curve,
)

__all__ = [
    "DATA_DIR_ENV",
    "INTENSITIES",
    "KEEP",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "SOURCES",
    "DatasetError",
    "DigitSamples",
    "InpaintedDigits",
    "IntensityMap",
    "PCAState",
    "ParzenResult",
    "apply_intensity_map",
    "density_band",
    "density_contours",
    "density_curve",
    "digit_grid",
    "digit_pairs_grid",
    "inpaint_digits",
    "intensity_map",
    "load_mnist",
    "main",
    "mnist_available",
    "mnist_cache_dir",
    "observed_mask",
    "parzen_log_likelihood",
    "pca_fit",
    "pca_inverse_transform",
    "pca_transform",
    "read_idx",
    "sample_digits",
]
