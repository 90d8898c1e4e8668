"""The ``jaxkde`` command: sample new MNIST digits, score a split under a KDE of another, plot
the density of 1-D or 2-D data.

Images (Pillow) and progress bars (tqdm) come from the ``cli`` extra, figures (matplotlib) from
the ``plot`` extra; they are imported only here, never by ``import jaxkde``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pathlib
import shutil
import sys
import tempfile
import traceback
import warnings

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxkde.apps.datasets import MNIST_FILES, load_mnist, mnist_available
from jaxkde.apps.digits import (
    INTENSITIES,
    KEEP,
    SOURCES,
    digit_grid,
    digit_pairs_grid,
    inpaint_digits,
    sample_digits,
)
from jaxkde.apps.parzen import parzen_log_likelihood
from jaxkde.apps.plot import density_contours, density_curve
from jaxkde.core.kernels import KERNEL_NAMES
from jaxkde.estimator.kde import KDE

__all__ = ["main"]


def _bandwidth(text: str):
    """A rule name or a positive number."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a rule name or a positive number; got {text!r}")
    if not 1e-150 <= value <= 1e150:
        raise argparse.ArgumentTypeError(f"must lie in [1e-150, 1e150]; got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0; got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0; got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1; got {text!r}")
    return value


def _digit(text: str) -> int:
    if text not in {str(d) for d in range(10)}:
        raise argparse.ArgumentTypeError(f"must be a digit 0-9; got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxkde",
        description="Kernel density estimation with jaxkde: MNIST digits, and density plots.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = (
        "folder with the MNIST IDX files (default: $JAXKDE_DATA_DIR, the shipped test split, "
        "the cache, a download)"
    )

    s = sub.add_parser(
        "sample",
        help="draw new handwritten digits and write them as a PNG grid (or a .npy array)",
        description="Fit a KDE to PCA scores of one digit's images and draw new images around "
        "source images; write a PNG grid pairing each source with its sample, or with --out "
        "FILE.npy the samples as float32 [n, 28, 28] in [0, 1]. Prints each sample's log density.",
    )
    s.add_argument("--digit", type=_digit, help="the digit to draw, 0-9 (default: any class)")
    s.add_argument("-n", "--n-samples", type=_positive_int, default=16, help="how many (16)")
    s.add_argument(
        "--bandwidth", type=_bandwidth, default="scott", help="rule or std in PCA space (scott)"
    )
    s.add_argument(
        "--scaling-factor",
        type=_non_negative_float,
        default=0.45,
        help="k in N(x_r, k H): smaller stays closer to the source (0.45)",
    )
    s.add_argument("--components", type=_positive_int, default=45, help="PCA components (45)")
    s.add_argument(
        "--intensity",
        choices=INTENSITIES,
        default="calibrated",
        help="calibrated: give the reconstruction the digits' ink distribution; linear: as the "
        "seed, clipped (calibrated)",
    )
    s.add_argument(
        "--source",
        choices=SOURCES,
        default="density",
        help="pick source images among the digit's higher-density half, or at random (density)",
    )
    s.add_argument("--split", choices=list(MNIST_FILES), default="test", help="data (test)")
    s.add_argument("--data-dir", type=pathlib.Path, help=data_help)
    s.add_argument("--seed", type=_seed, default=0, help="random seed, >= 0 (0)")
    s.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("digits.png"), help=".png or .npy"
    )

    i = sub.add_parser(
        "inpaint",
        help="complete test digits from one half by conditional sampling (PNG grid or .npy)",
        description="Fit a KDE to PCA scores of the MNIST training images (or, without them, "
        "of the shipped test images other than those completed), keep one half of each chosen "
        "test digit and draw the other half from the KDE conditioned on it (exact: the kept "
        "pixels are a linear observation of the PCA scores). Writes a PNG grid of (observed "
        "half, completion, original) triples, or with --out FILE.npy the completed digits as "
        "float32 [n, 28, 28] in [0, 1].",
    )
    i.add_argument("--digit", type=_digit, help="complete test digits of this class (default any)")
    i.add_argument("--keep", choices=KEEP, default="top", help="the half observed (top)")
    i.add_argument("-n", "--n-digits", type=_positive_int, default=16, help="how many (16)")
    i.add_argument("--components", type=_positive_int, default=50, help="PCA components (50)")
    i.add_argument("--data-dir", type=pathlib.Path, help=data_help)
    i.add_argument("--seed", type=_seed, default=0, help="random seed, >= 0 (0)")
    i.add_argument("--out", type=pathlib.Path, required=True, help=".png or .npy")

    c = sub.add_parser(
        "score",
        help="mean log-likelihood of one split under a KDE of another",
        description="Fit a Gaussian KDE to the pixels (/ 255) of one split and print the mean "
        "log-likelihood of another, in nats, with its standard error.",
    )
    c.add_argument("--train", choices=list(MNIST_FILES), default="train", help="fit (train)")
    c.add_argument("--test", choices=list(MNIST_FILES), default="test", help="score (test)")
    c.add_argument("--bandwidth", type=_bandwidth, default=0.2, help="rule or std (0.2)")
    c.add_argument("--limit", type=_positive_int, help="use only the first N images of each")
    c.add_argument("--batch-size", type=_positive_int, default=1024, help="queries per block")
    c.add_argument("--data-dir", type=pathlib.Path, help=data_help)
    _distributed_options(c)

    z = sub.add_parser(
        "parzen",
        help="Parzen-window log-likelihood of generated samples (the GAN paper's protocol)",
        description="Gaussian Parzen window with the samples as centres: sigma chosen on the "
        "last --validation-size images of --validation over numpy.logspace(-1, 0, 10) (or the "
        "given --sigma values), then the mean test log-likelihood (nats) with its standard error "
        "(population std / sqrt(n)), as in Breuleux et al. 2011 and Goodfellow et al. 2014.",
    )
    z.add_argument(
        "--samples",
        type=pathlib.Path,
        required=True,
        help=".npy of samples, [n, 28, 28] or [n, 784], pixels in [0, 1]",
    )
    z.add_argument("--test", choices=list(MNIST_FILES), default="test", help="scored (test)")
    z.add_argument(
        "--validation",
        choices=list(MNIST_FILES),
        default="train",
        help="split whose last images choose sigma (train)",
    )
    z.add_argument("--validation-size", type=_positive_int, default=10000, help="(10000)")
    z.add_argument("--sigma", type=_positive_float, nargs="+", help="grid of sigmas to search")
    z.add_argument("--limit", type=_positive_int, help="score only the first N test images")
    z.add_argument("--data-dir", type=pathlib.Path, help=data_help)
    _distributed_options(z)

    g = sub.add_parser(
        "plot",
        help="plot the density of 1-D or 2-D data (a curve or filled contours) to an image",
        description="Fit a KDE to one or two columns of a .npy or .csv file and draw its "
        "density: a curve in 1-D, filled contours in 2-D (exact tails: score_grid's auto "
        "method). Needs matplotlib: pip install 'jaxkde[plot]'.",
    )
    g.add_argument(
        "--data",
        type=pathlib.Path,
        required=True,
        help=".npy array (n,) or (n, d), or .csv (comma-separated; a header row of names is "
        "recognised)",
    )
    g.add_argument(
        "--columns",
        nargs="+",
        help="one or two columns, by 0-based index or header name (default: all, if 1 or 2)",
    )
    g.add_argument("--bandwidth", type=_bandwidth, default="scott", help="rule or std (scott)")
    g.add_argument("--kernel", choices=KERNEL_NAMES, default="gaussian", help="(gaussian)")
    g.add_argument("--grid-size", type=_positive_int, help="points per axis (1024 / 256)")
    g.add_argument("--out", type=pathlib.Path, required=True, help=".png, .pdf or .svg")
    return parser


def _distributed_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "several processes (jax.distributed)",
        "Start the same command in every process: each keeps only its share of the KDE's rows, "
        "and process 0 prints the result. On SLURM or Kubernetes give --distributed alone (JAX "
        "reads the coordinator and the process id from the environment); by hand, give the "
        "three options below in every process.",
    )
    group.add_argument("--distributed", action="store_true", help="run under jax.distributed")
    group.add_argument("--coordinator", help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=_positive_int, help="how many processes")
    group.add_argument("--process-id", type=int, help="this process, 0 .. N-1")


def _start_processes(args):
    """``None`` without ``--distributed``; else ``jax.distributed`` is initialised and the mesh
    over every process's devices is returned."""
    manual = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed:
        if any(v is not None for v in manual):
            raise ValueError("--coordinator, --num-processes and --process-id need --distributed.")
        return None
    if any(v is not None for v in manual) and any(v is None for v in manual):
        raise ValueError("give all of --coordinator, --num-processes and --process-id, or none "
                         "(to let JAX read them from SLURM or Kubernetes).")  # fmt: skip
    if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process-id must be in 0 .. {args.num_processes - 1}; got "
                         f"{args.process_id}.")  # fmt: skip
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives only
    try:
        jax.distributed.initialize(*manual, initialization_timeout=120)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--distributed: could not start jax.distributed: {exc}") from None
    return Mesh(np.array(jax.devices()), ("data",))


def _my_share(rows: np.ndarray, mesh):
    """This process's consecutive share of ``rows`` as a global array on ``mesh``."""
    part = np.array_split(np.arange(rows.shape[0]), jax.process_count())[jax.process_index()]
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.make_array_from_process_local_data(sharding, rows[part])


def _leader(mesh) -> bool:
    """Whether this process prints (process 0, or the only one)."""
    return mesh is None or jax.process_index() == 0


def _progress(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the cli extra is not installed: no bar
        return None
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


def _write_atomically(path: pathlib.Path, write) -> None:
    """Write ``path`` (the ``--out`` file) through ``write(file)`` into a temporary file beside
    it, then rename it into place: a failed or interrupted write leaves the previous file (if
    any) untouched, and a failure is an ``OSError`` that names ``--out`` and the reason."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes the file private (0600); give it the mode a plain open would.
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(
                f"--out {str(path)!r} cannot be written: {_os_reason(exc, path)}."
            ) from None
        raise


def _os_reason(exc: OSError, path: pathlib.Path) -> str:
    """The reason of a failed write in words ("no space left on device"), not a temporary
    file's name or a library's byte counts."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free == 0:
            return "no space left on device"
    return str(exc) or type(exc).__name__


def _write_digits(out: pathlib.Path, images: np.ndarray, grid) -> None:
    """``images`` as float32 ``.npy``, or the uint8 picture ``grid()`` as PNG, atomically."""
    if out.suffix.lower() == ".npy":
        array = images.astype(np.float32)
        _write_atomically(out, lambda f: np.save(f, array))
        return
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(
            "writing PNG needs Pillow: pip install 'jaxkde[cli]' (or write --out FILE.npy)."
        ) from None
    picture = Image.fromarray(grid())
    _write_atomically(out, lambda f: picture.save(f, format="PNG"))


def _cmd_sample(args) -> int:
    out: pathlib.Path = args.out
    if out.suffix.lower() not in {".png", ".npy"}:
        raise ValueError(f"--out must end in .png or .npy; got {str(out)!r}.")
    images, labels = load_mnist(args.split, args.data_dir)
    result = sample_digits(
        images,
        labels,
        digit=args.digit,
        n_samples=args.n_samples,
        bandwidth=args.bandwidth,
        scaling_factor=args.scaling_factor,
        n_components=args.components,
        source=args.source,
        intensity=args.intensity,
        key=args.seed,
    )
    _write_digits(out, result.samples, lambda: digit_pairs_grid(result.sources, result.samples))
    what = "any digit" if args.digit is None else f"digit {args.digit}"
    print(
        f"{args.n_samples} samples of {what} (k={args.scaling_factor}, "
        f"{args.components} PCA components, bandwidth {args.bandwidth!r}, "
        f"{args.intensity} intensities) -> {out}"
    )  # the name written is exactly --out, whatever its suffix's case
    print("log density of each sample (nats, in PCA space):")
    for i, (src, ld) in enumerate(zip(result.source_indices, result.log_density, strict=True)):
        print(f"  {i:3d}  source image {int(src):5d}  {float(ld):10.3f}")
    return 0


def _cmd_inpaint(args) -> int:
    out: pathlib.Path = args.out
    if out.suffix.lower() not in {".png", ".npy"}:
        raise ValueError(f"--out must end in .png or .npy; got {str(out)!r}.")
    images, labels = load_mnist("test", args.data_dir)
    pool = (
        np.arange(labels.shape[0]) if args.digit is None else np.flatnonzero(labels == args.digit)
    )
    if args.n_digits > pool.size:
        raise ValueError(f"-n {args.n_digits} is more than the {pool.size} test digits available.")
    picks = np.sort(np.random.default_rng(args.seed).choice(pool, args.n_digits, replace=False))
    if mnist_available("train", args.data_dir):
        train, _ = load_mnist("train", args.data_dir)
        fitted = f"the {train.shape[0]:,} training images"
    else:  # the shipped test split, without the digits being completed
        train = np.delete(images, picks, axis=0)
        fitted = f"the {train.shape[0]:,} other test images (no training split found)"
    result = inpaint_digits(train, images[picks], keep=args.keep, n_components=args.components,
                            key=args.seed)  # fmt: skip
    _write_digits(out, result.completions, lambda: digit_grid(
        [result.observed, result.completions, result.originals]))  # fmt: skip
    print(f"{args.n_digits} test digits completed from their {args.keep} half; KDE of "
          f"{args.components} PCA scores of {fitted} -> {out}")  # fmt: skip
    for k, row in enumerate(picks):
        print(f"  {k:3d}  test image {int(row):5d}  label {int(labels[row])}")
    return 0


def _cmd_score(args) -> int:
    mesh = _start_processes(args)
    train, _ = load_mnist(args.train, args.data_dir)
    test, _ = load_mnist(args.test, args.data_dir)
    if args.limit:
        train, test = train[: args.limit], test[: args.limit]
    x = train.reshape(train.shape[0], -1).astype(np.float32) / 255.0
    q = test.reshape(test.shape[0], -1).astype(np.float32) / 255.0
    kde = KDE(bandwidth=args.bandwidth, batch_size=args.batch_size, mesh=mesh)
    kde.fit(x if mesh is None else _my_share(x, mesh))
    bar = (_progress(q.shape[0], f"scoring {args.test} under a KDE of {args.train}")
           if _leader(mesh) else None)  # fmt: skip
    parts = []
    for start in range(0, q.shape[0], args.batch_size):
        parts.append(kde.score_samples(q[start : start + args.batch_size]))
        if bar is not None:
            bar.update(parts[-1].shape[0])
    if bar is not None:
        bar.close()
    ll = np.concatenate(parts).astype(np.float64)
    stderr = ll.std() / math.sqrt(ll.size)
    where = "" if mesh is None else f" spread over {mesh.devices.size} devices"
    if _leader(mesh):
        print(
            f"mean log-likelihood of {ll.size} {args.test} images under a KDE of {x.shape[0]} "
            f"{args.train} images{where} (bandwidth {args.bandwidth!r}): {ll.mean():.2f} "
            f"+/- {stderr:.2f} nats"
        )
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"jaxkde: warning: {message}", file=sys.stderr)


def _cmd_parzen(args) -> int:
    mesh = _start_processes(args)
    try:
        samples = np.load(args.samples, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"--samples {str(args.samples)!r} is not a readable .npy: {exc}") from None
    if not isinstance(samples, np.ndarray):  # an .npz archive
        samples.close()
        raise ValueError(
            f"--samples {str(args.samples)!r} is an .npz archive; give one .npy array of images."
        )
    if not (np.issubdtype(samples.dtype, np.floating) or np.issubdtype(samples.dtype, np.integer)):
        raise ValueError(f"--samples must hold numbers; got dtype {samples.dtype}.")
    if samples.ndim == 3:
        samples = samples.reshape(samples.shape[0], -1)
    if samples.ndim != 2 or samples.shape[1] != 784:
        raise ValueError(
            f"--samples must hold [n, 28, 28] or [n, 784] images; got {samples.shape}."
        )
    finite = samples[np.isfinite(samples)] if samples.size else samples
    if samples.size and (not np.all(np.isfinite(samples)) or finite.min() < 0 or finite.max() > 1):
        raise ValueError(
            f"--samples must hold finite pixels in [0, 1], as the Parzen protocol scores them "
            f"against test images / 255; these range over [{finite.min():g}, {finite.max():g}]"
            + (" (0-255? divide by 255)." if finite.max() > 1 else ".")
        )
    test, _ = load_mnist(args.test, args.data_dir)
    valid, _ = load_mnist(args.validation, args.data_dir)
    test = test.reshape(test.shape[0], -1)[: args.limit].astype(np.float32) / 255
    valid = valid.reshape(valid.shape[0], -1)[-args.validation_size :].astype(np.float32) / 255
    samples = samples.astype(np.float32)
    result = parzen_log_likelihood(samples if mesh is None else _my_share(samples, mesh), test,
                                   valid, args.sigma, mesh=mesh)  # fmt: skip
    if not _leader(mesh):
        return 0
    for sigma, value in zip(result.sigmas, result.validation_means, strict=True):
        print(f"  sigma {sigma:.4f}: mean validation log-likelihood {value:10.2f}")
    print(
        f"Parzen log-likelihood of {test.shape[0]} {args.test} images under {samples.shape[0]} "
        f"samples: {result.mean:.2f} +/- {result.stderr:.2f} nats (sigma = {result.sigma:.4f}, "
        f"chosen on the last {valid.shape[0]} {args.validation} images)"
    )
    return 0


_FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def _read_table(path: pathlib.Path) -> tuple[np.ndarray, list[str] | None]:
    """``(values (n, d) float64, header names or None)`` of a .npy or .csv file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"--data {str(path)!r} is not a readable .npy: {exc}") from None
        if not isinstance(values, np.ndarray):  # an .npz archive
            values.close()
            raise ValueError(f"--data {str(path)!r} is an .npz archive; give one .npy array.")
        names = None
    elif suffix == ".csv":
        try:
            with open(path, encoding="utf-8-sig") as f:  # "CSV UTF-8" starts with a BOM
                first = f.readline()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--data {str(path)!r} cannot be read: {exc}") from None
        fields = [t.strip().strip('"') for t in first.split(",")]
        try:
            [float(t) for t in fields]
            names = None
        except ValueError:
            names = fields
        if not first.strip():
            raise ValueError(f"--data {str(path)!r} is empty: no header and no rows.")
        try:
            with warnings.catch_warnings():  # an empty table is reported below, not warned
                warnings.simplefilter("ignore", UserWarning)
                values = np.loadtxt(path, delimiter=",", skiprows=0 if names is None else 1,
                                    ndmin=2, encoding="utf-8-sig")  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"--data {str(path)!r}: not a table of numbers ({exc}).") from None
        if values.shape[0] == 0:
            raise ValueError(
                f"--data {str(path)!r} has a header ({len(fields)} column(s)) but no rows."
            )
    else:
        raise ValueError(f"--data must end in .npy or .csv; got {str(path)!r}.")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"--data must hold numbers; got dtype {values.dtype}.")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"--data must be a table (n,) or (n, d); got shape {values.shape}.")
    if values.shape[0] == 0:
        raise ValueError(f"--data {str(path)!r} has no rows.")
    return values.astype(np.float64), names


def _select_columns(values: np.ndarray, names, columns) -> tuple[np.ndarray, list[str]]:
    d = values.shape[1]
    labels = names if names is not None and len(names) == d else [f"column {k}" for k in range(d)]
    if columns is None:
        if d > 2:
            raise ValueError(f"--data has {d} columns; choose one or two with --columns.")
        return values, labels
    if len(columns) > 2:
        raise ValueError(f"--columns takes one or two columns; got {len(columns)}.")
    index = []
    for c in columns:
        if names is not None and c in names:
            index.append(names.index(c))
            continue
        try:
            k = int(c)
        except ValueError:
            known = f" (the header has {names})" if names is not None else ""
            raise ValueError(f"--columns: no column {c!r}{known}.") from None
        if not 0 <= k < d:
            raise ValueError(f"--columns: index {k} is out of range for {d} column(s).")
        index.append(k)
    return values[:, index], [labels[k] for k in index]


def _cmd_plot(args) -> int:
    out: pathlib.Path = args.out
    fmt = _FIGURE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out must end in .png, .pdf or .svg; got {str(out)!r}.")
    values, names = _read_table(args.data)
    x, labels = _select_columns(values, names, args.columns)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"--data has {int(bad.sum())} row(s) with NaN or infinite values in the chosen "
            f"column(s) (first: row {int(np.flatnonzero(bad)[0])}); remove them."
        )
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'jaxkde[plot]'.") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    kde = KDE(args.kernel, bandwidth=args.bandwidth).fit(x)
    fig, ax = plt.subplots(figsize=(6.4, 4.8) if x.shape[1] == 1 else (6.4, 5.2))
    try:
        if x.shape[1] == 1:
            density_curve(kde, ax, grid_size=args.grid_size or 1024)
            ax.set_xlabel(labels[0])
        else:
            density_contours(kde, ax, grid_size=args.grid_size or 256)
            ax.set_xlabel(labels[0])
            ax.set_ylabel(labels[1])
        ax.set_title(f"{args.kernel} KDE of {x.shape[0]:,} points (bandwidth {args.bandwidth!r})")
        fig.tight_layout()
        _write_atomically(out, lambda f: fig.savefig(f, format=fmt, dpi=100))
    finally:
        plt.close(fig)
    h = np.sqrt(np.diag(kde.bandwidth_))
    print(
        f"{x.shape[0]} points, {x.shape[1]}-D ({', '.join(labels)}), {args.kernel} kernel, "
        f"bandwidth {args.bandwidth!r} (std {', '.join(f'{v:.4g}' for v in h)}) -> {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxkde`` command; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        return 130
    warnings.showwarning = _one_line_warning
    try:
        commands = {"sample": _cmd_sample, "score": _cmd_score, "parzen": _cmd_parzen,
                    "plot": _cmd_plot, "inpaint": _cmd_inpaint}  # fmt: skip
        return commands[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C: quiet, and files are only ever renamed into place
        print("jaxkde: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. head)
        sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        return 1
    except (ValueError, TypeError, OSError) as exc:
        print(f"jaxkde: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, and the traceback only on request
        if os.environ.get("JAXKDE_DEBUG"):
            traceback.print_exc()
        print(
            f"jaxkde: internal error: {type(exc).__name__}: {exc} (set JAXKDE_DEBUG=1 for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
