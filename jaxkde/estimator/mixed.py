"""``MixedKDE``: densities of mixed continuous and discrete data (statsmodels' ``var_type``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxkde._validation import check_data, check_positive_int, check_weights, not_fitted
from jaxkde.core.engine import default_block_sizes, log_density
from jaxkde.core.kernels import GaussianKernel
from jaxkde.core.sampling import as_key
from jaxkde.core.state import build_state
from jaxkde.estimator._params import Params
from jaxkde.variants import mixed

__all__ = ["MIXED_BANDWIDTHS", "MixedKDE"]

#: Bandwidth names of :class:`MixedKDE`.
MIXED_BANDWIDTHS = ("cv_ml", "cv_ls", "normal_reference")


class MixedKDE(Params):
    """Kernel density of data with continuous, unordered and ordered discrete columns.

    statsmodels' ``KDEMultivariate(data, var_type, bw)``: the product of a Gaussian kernel per
    continuous column, Aitchison-Aitken's per unordered and Wang-van Ryzin's per ordered
    column (see :mod:`jaxkde.variants.mixed`, which evaluates it exactly as a Gaussian KDE of
    an embedding of the rows).

    Parameters
    ----------
    var_type : str
        One letter per column: ``"c"`` continuous, ``"u"`` unordered, ``"o"`` ordered
        (integer-valued), e.g. ``"ccu"``.
    bandwidth : {"cv_ml", "cv_ls", "normal_reference"} or array-like of shape (d,)
        ``"cv_ml"`` (default): maximum leave-one-out likelihood over every column's
        bandwidth at once (L-BFGS from optax, gradients through the kernels; at most
        ``max_steps`` steps). ``"cv_ls"``: least-squares cross-validation, statsmodels'
        ``imse`` (``int f^2`` by the kernels' convolutions, the discrete ones summed over the
        levels in the data, as statsmodels and R's np do). ``"normal_reference"``:
        statsmodels' ``1.06 sigma n^(-1/(4+d))`` for the continuous columns and, clipped into
        the valid range, the discrete ones. An
        array: ``h`` of each continuous column and ``lambda`` of each discrete one (unordered
        ``0 < lambda <= (c - 1) / c``, ordered ``0 < lambda < 1``).
    max_steps : int
        Most optimiser steps of ``"cv_ml"`` and ``"cv_ls"`` (default 200).
    efficient : bool
        statsmodels' ``efficient=True`` (Racine's bandwidth scaling) for large ``n``:
        ``"cv_ml"`` or ``"cv_ls"`` on ``n_res`` random subsamples of ``n_sub`` rows, each
        bandwidth divided by its subsample's scale (continuous
        ``min(sd, IQR / 1.349) n_sub^(-1/(k_c + 4))``, discrete ``n_sub^(-2/(k_c + 4))``), the
        median of those ratios times the full data's scale. Costs ``n_res n_sub^2`` kernel
        terms per step instead of ``n^2`` (statsmodels slices blocks by default; random
        subsamples keep one compiled program).
    n_sub, n_res : int
        Subsample size (default 50) and count (default 25) of ``efficient``.
    key : int, JAX key, NumPy Generator or None
        Draws the subsamples of ``efficient`` (default 0: the same subsamples every fit).
    batch_size, chunk_size : int, optional
        Block sizes of the engine (see :class:`jaxkde.KDE`).

    Attributes
    ----------
    bandwidth_ : np.ndarray, shape (d,)
        ``h`` or ``lambda`` of each column, in ``var_type``'s order.
    cv_score_ : float or None
        The cross-validation objective reached: with ``"cv_ml"`` the leave-one-out
        log-likelihood (weighted mean per row), with ``"cv_ls"`` the least-squares score
        ``int f^2 - 2 sum_i w_i f_{-i}(x_i)``; ``None`` otherwise (and with ``efficient``).
    n_iter_ : int or None
        With ``"cv_ml"`` or ``"cv_ls"``: the optimiser steps taken.
    n_features_in_ : int
    """

    def __init__(
        self,
        var_type: str = "c",
        bandwidth="cv_ml",
        *,
        max_steps: int = 200,
        efficient: bool = False,
        n_sub: int = 50,
        n_res: int = 25,
        key=0,
        batch_size: int | None = None,
        chunk_size: int | None = None,
    ):
        self.var_type = var_type
        self.bandwidth = bandwidth
        self.max_steps = max_steps
        self.efficient = efficient
        self.n_sub = n_sub
        self.n_res = n_res
        self.key = key
        self.batch_size = batch_size
        self.chunk_size = chunk_size

    def fit(self, X, y=None, sample_weight=None) -> MixedKDE:
        """Fit to ``X`` ``(n, d)``; discrete columns hold their levels as numbers."""
        del y
        data, dtype = check_data(X, "X")
        layout = mixed.mixed_layout(data, self.var_type)
        weights = check_weights(sample_weight, data.shape[0])
        max_steps = check_positive_int(self.max_steps, "max_steps")
        chunk = self.chunk_size or default_block_sizes()[1]
        codes, _ = mixed.codes(layout, data)
        bandwidth = self.bandwidth
        score, n_iter = None, None
        if isinstance(bandwidth, str) and bandwidth in MIXED_BANDWIDTHS:
            start = _clipped(layout, mixed.normal_reference(data))
            objective = bandwidth[3:] if bandwidth.startswith("cv_") else None
            if objective is not None and self.efficient:
                start = self._efficient(layout, data, codes, weights, max_steps, objective)
            elif objective is not None:
                start, score, n_iter = _cross_validate(
                    layout, data, codes, weights, start, max_steps, objective)  # fmt: skip
            bandwidth = start
        elif isinstance(bandwidth, str):
            raise ValueError(f"bandwidth must be one of {list(MIXED_BANDWIDTHS)} or an array of "
                             f"shape ({data.shape[1]},); got {bandwidth!r}.")  # fmt: skip
        bw = _check_bandwidth(layout, bandwidth)
        cont, disc = layout.continuous, layout.discrete
        lambdas = bw[disc]
        embedded = np.concatenate([data[:, cont], np.asarray(mixed.embed_discrete(
            layout, jnp.asarray(codes), jnp.asarray(lambdas, dtype), dtype), np.float64)],
            axis=1)  # fmt: skip
        diag = np.concatenate([bw[cont] ** 2, np.ones(embedded.shape[1] - len(cont))])
        self.state_ = build_state(embedded, weights, diag, GaussianKernel(), chunk_size=chunk,
                                  dtype=dtype)  # fmt: skip
        self.cv_score_, self.n_iter_ = score, n_iter
        self.layout_ = layout
        self.bandwidth_ = bw
        self._fitted_rows = (data, weights)
        self._marginals = {}
        self._log_constant = float(mixed.embedded_log_constant(layout, jnp.asarray(lambdas)))
        self.n_features_in_ = data.shape[1]
        return self

    def _efficient(self, layout, data, codes, weights, max_steps, objective) -> np.ndarray:
        """Racine's bandwidth scaling from subsamples (see ``efficient``)."""
        if not isinstance(self.efficient, (bool, np.bool_)):
            raise TypeError(f"efficient must be True or False; got {self.efficient!r}.")
        n = data.shape[0]
        n_sub = check_positive_int(self.n_sub, "n_sub")
        n_res = check_positive_int(self.n_res, "n_res")
        if not 2 <= n_sub <= n:
            raise ValueError(f"n_sub must lie in [2, {n}] (the rows of X); got {n_sub}.")
        keys = jax.random.split(as_key(self.key), n_res)
        ratios = []
        for k in keys:
            rows = np.sort(np.asarray(jax.random.choice(k, n, (n_sub,), replace=False)))
            sub = data[rows]
            try:
                start = _clipped(layout, mixed.normal_reference(sub))
                sub_layout = mixed.mixed_layout(sub, layout.var_type)
            except ValueError:  # a subsample with a constant column or a single level
                continue
            sub_codes = mixed.codes(sub_layout, sub)[0]
            bw = _cross_validate(sub_layout, sub, sub_codes,
                                 None if weights is None else weights[rows], start, max_steps,
                                 objective)[0]  # fmt: skip
            ratios.append(bw / _bandwidth_scale(layout, sub))
        if not ratios:
            raise ValueError(
                "efficient=True found no subsample in which every continuous "
                "column varies and every discrete one has 2 levels; raise n_sub."
            )
        return _into_range(layout, np.median(ratios, axis=0) * _bandwidth_scale(layout, data))

    def _fitted(self):
        if not hasattr(self, "state_"):
            raise not_fitted("This MixedKDE is not fitted yet; call fit before using it.")
        return self.state_

    def score_samples(self, X) -> np.ndarray:
        """Log density at each row of ``X``, ``(m,)``: a discrete value outside the data's
        levels gets the kernel's value for "another level" (unordered) or ``lambda^steps``
        (ordered), as statsmodels."""
        state = self._fitted()
        queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner="MixedKDE")
        return self._log_density(queries, np.arange(self.n_features_in_), state)

    def _log_density(self, queries, columns, state, layout=None, bw=None, constant=None):
        layout = self.layout_ if layout is None else layout
        bw = self.bandwidth_ if bw is None else bw
        codes, beyond = mixed.codes(layout, queries)
        lambdas = bw[layout.discrete]
        embedded = np.concatenate([queries[:, layout.continuous], np.asarray(
            mixed.embed_discrete(layout, jnp.asarray(codes), jnp.asarray(lambdas, state.dtype),
                                 state.dtype, outside=jnp.asarray(beyond > 0)), np.float64)],
            axis=1)  # fmt: skip
        block = self.batch_size or default_block_sizes()[0]
        log_f = np.concatenate([
            np.asarray(log_density(state, embedded[i : i + block]), np.float64)
            for i in range(0, len(embedded), block)
        ]) if len(embedded) else np.zeros(0)  # fmt: skip
        constant = self._log_constant if constant is None else constant
        return log_f + constant + mixed.outside_log_terms(layout, beyond, lambdas)

    def predict(self, X) -> np.ndarray:
        """Density (probability for discrete columns) at each row of ``X``."""
        return np.exp(self.score_samples(X))

    def score(self, X, y=None) -> float:
        """Total log-likelihood of ``X``."""
        del y
        return float(np.sum(self.score_samples(X)))

    def conditional_score_samples(self, X, given) -> np.ndarray:
        """``log f(x_rest | x_given)`` at each row of ``X`` ``(m, d)``: the log density minus that
        of the marginal KDE of the columns ``given`` (the same rows, kernels and bandwidths;
        statsmodels' ``KDEMultivariateConditional`` with those bandwidths)."""
        self._fitted()
        queries, _ = check_data(X, "X", n_features=self.n_features_in_, owner="MixedKDE")
        cols = np.atleast_1d(np.asarray(given))
        if (cols.dtype.kind not in "iu" or cols.size == 0 or len(set(cols.tolist())) != cols.size
                or cols.min() < 0 or cols.max() >= self.n_features_in_
                or cols.size == self.n_features_in_):  # fmt: skip
            d = self.n_features_in_
            raise ValueError(f"given must be distinct column indices in [0, {d}), not all of "
                             f"them; got {given!r}.")  # fmt: skip
        return self.score_samples(queries) - self._marginal(cols).score_samples(queries[:, cols])

    def _marginal(self, cols: np.ndarray) -> MixedKDE:
        """The MixedKDE of the columns ``cols`` with the fitted rows and bandwidths, fitted at
        its first use and kept until the next ``fit``."""
        key = tuple(cols.tolist())
        if key not in self._marginals:
            data, weights = self._fitted_rows
            kde = MixedKDE("".join(self.var_type[c] for c in cols), self.bandwidth_[cols],
                           batch_size=self.batch_size, chunk_size=self.chunk_size)  # fmt: skip
            self._marginals[key] = kde.fit(data[:, cols], sample_weight=weights)
        return self._marginals[key]


def _bandwidth_scale(layout, data: np.ndarray) -> np.ndarray:
    """Racine's scale of each column's bandwidth at ``data``'s size: continuous
    ``min(sd, IQR / 1.349) n^(-1/(k_c + 4))``, discrete ``n^(-2/(k_c + 4))``."""
    n = data.shape[0]
    k_c = len(layout.continuous)
    q75, q25 = np.percentile(data, [75, 25], axis=0)
    spread = np.minimum(np.std(data, axis=0), (q75 - q25) / 1.349)
    scale = spread * n ** (-1.0 / (k_c + 4))
    scale[layout.discrete] = n ** (-2.0 / (k_c + 4))
    return scale


def _clipped(layout, start: np.ndarray) -> np.ndarray:
    """``normal_reference`` with each discrete ``lambda`` inside ``[0.01, 0.99]`` of its range
    and each continuous ``h`` positive."""
    out = start.copy()
    disc = layout.discrete
    top = mixed.discrete_bounds(layout)
    out[disc] = np.clip(out[disc], 0.01 * top, 0.99 * top)
    cont = layout.continuous
    if np.any(out[cont] <= 0):
        raise ValueError("a continuous column of X is constant; normal_reference and cv_ml "
                         "need every continuous column to vary.")  # fmt: skip
    return out


def _check_bandwidth(layout, bandwidth) -> np.ndarray:
    d = len(layout.var_type)
    try:
        bw = np.asarray(bandwidth, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"bandwidth must be a name or an array of shape ({d},); got "
                        f"{bandwidth!r}.") from None  # fmt: skip
    if bw.shape != (d,):
        raise ValueError(f"bandwidth must have one value per column, shape ({d},); got shape "
                         f"{np.shape(bandwidth)}.")  # fmt: skip
    if not np.all(np.isfinite(bw)):
        raise ValueError("bandwidth must be finite.")
    cont, disc = layout.continuous, layout.discrete
    if np.any(bw[cont] <= 0):
        j = int(cont[np.flatnonzero(bw[cont] <= 0)[0]])
        raise ValueError(f"bandwidth of continuous column {j} must be positive; got {bw[j]!r}.")
    top = mixed.discrete_bounds(layout)
    for i, j in enumerate(disc):
        kind = layout.var_type[j]
        ok = 0 < bw[j] <= top[i] if kind == "u" else 0 < bw[j] < 1
        if not ok:
            span = f"(0, {top[i]:.6g}]" if kind == "u" else "(0, 1)"
            raise ValueError(f"bandwidth (lambda) of discrete column {j} ({kind!r}) must lie in "
                             f"{span}; got {bw[j]!r}.")  # fmt: skip
    return bw


_OPTIMIZER = optax.lbfgs()


#: Rows per block of the cross-validation objective (memory ``O(block * n)``).
_CV_BLOCK = 256


def _cv_objective(params, x_c, code, w, top, present, layout, objective):
    """The objective minimised at ``(log h, logit(lambda / top))``: minus the weighted mean
    leave-one-out log-likelihood (``"ml"``), or the least-squares score
    ``int f^2 - 2 sum_i w_i f_{-i}(x_i)`` (``"ls"``; statsmodels' ``imse``, its discrete
    convolutions summed over the levels in the data, ``present``).

    The product kernel term by term (continuous differences, discrete codes), each row's own
    term masked, row blocks of ``_CV_BLOCK`` in ``lax.map``: a small program to compile and to
    differentiate, the same kernels the embedding evaluates.
    """
    h, lam = jnp.exp(params[0]), top * jax.nn.sigmoid(params[1])
    n = x_c.shape[0]
    u = x_c / h
    log_w = jnp.full((n,), -jnp.log(n), x_c.dtype) if w is None else jnp.log(w)
    kinds = [(k, lev) for k, lev in zip(layout.var_type, layout.levels, strict=True) if k != "c"]
    block = min(_CV_BLOCK, n)
    n_blocks = -(-n // block)
    index = jnp.minimum(jnp.arange(n_blocks * block), n - 1).reshape(n_blocks, block)
    tables = [_convolution_table(kind, lev, lam[i], present[i])
              for i, (kind, lev) in enumerate(kinds)] if objective == "ls" else []  # fmt: skip

    ls = objective == "ls"

    def rows(idx):
        kern = jnp.broadcast_to(log_w[None, :], (block, n))
        conv = kern  # int f^2's terms, for "ls" only
        for j in range(u.shape[1]):
            sq = (u[idx, j][:, None] - u[None, :, j]) ** 2
            kern = kern - 0.5 * sq
            if ls:
                conv = conv - 0.25 * sq
        for i, (kind, lev) in enumerate(kinds):
            a, b = code[idx, i][:, None], code[None, :, i]
            same = jnp.log1p(-lam[i])
            if kind == "u":
                other = jnp.log(lam[i] / (len(lev) - 1))
            else:
                steps = jnp.abs(a - b).astype(x_c.dtype)
                other = same - jnp.log(2.0) + steps * jnp.log(lam[i])
            kern = kern + jnp.where(a == b, same, other)
            if ls:
                conv = conv + tables[i][a, b]
        kern = jnp.where(idx[:, None] == jnp.arange(n)[None, :], -jnp.inf, kern)
        loo = jax.scipy.special.logsumexp(kern, axis=1) - jnp.log1p(-jnp.exp(log_w[idx]))
        return (loo, jax.scipy.special.logsumexp(conv, axis=1)) if ls else (loo,)

    loo, *conv = (a.reshape(-1)[:n] for a in jax.lax.map(rows, index))
    log_norm = -jnp.sum(jnp.log(h)) - 0.5 * u.shape[1] * jnp.log(2.0 * jnp.pi)
    loo = loo + log_norm
    if objective == "ml":
        return -(jnp.mean(loo) if w is None else jnp.sum(w * loo))
    conv = conv[0] + log_norm - 0.5 * u.shape[1] * jnp.log(2.0)  # N(0, 2 h^2)
    square = jnp.exp(jax.scipy.special.logsumexp(log_w + conv))
    return square - 2.0 * jnp.exp(jax.scipy.special.logsumexp(log_w + loo))


def _convolution_table(kind: str, lev, lam, present):
    """``log sum_z k(z, a) k(z, b)`` for every pair of codes ``(a, b)`` of one discrete column,
    the sum over the levels ``present`` in the data (statsmodels' convolution kernels)."""
    if kind == "u":
        c = len(lev)
        other = lam / (c - 1)
        z = jnp.arange(c + 1)
        kern = jnp.where(z[:, None] == z[None, :], 1.0 - lam, other)  # (level, code)
        kern = jnp.where((z[:, None] < c), kern, 0.0)  # levels the data lack are no z
    else:
        z = jnp.arange(lev[1] - lev[0] + 1)
        steps = jnp.abs(z[:, None] - z[None, :]).astype(lam.dtype)
        kern = jnp.where(steps == 0, 1.0 - lam, 0.5 * (1.0 - lam) * lam**steps)
        kern = jnp.where(present[: z.shape[0], None], kern, 0.0)
    return jnp.log(kern.T @ kern)


_objective_program = jax.jit(_cv_objective, static_argnames=("layout", "objective"))


@functools.partial(jax.jit, static_argnames=("layout", "objective"))
def _cv_step(params, opt_state, x_c, code, w, top, present, layout, objective):
    """One L-BFGS step (one compiled program per data shape, layout and objective)."""

    def value_fn(p):
        return _cv_objective(p, x_c, code, w, top, present, layout, objective)

    value, grad = optax.value_and_grad_from_state(value_fn)(params, state=opt_state)
    updates, opt_state = _OPTIMIZER.update(grad, opt_state, params, value=value, grad=grad,
                                           value_fn=value_fn)  # fmt: skip
    return optax.apply_updates(params, updates), opt_state, value


def _cross_validate(layout, data, codes, weights, start, max_steps, objective):
    """Bandwidths minimising the ``objective`` (``"ml"`` or ``"ls"``, :func:`_cv_objective`)
    over ``log h`` and ``logit(lambda / top)``, from ``start``, at most ``max_steps`` L-BFGS
    steps (stops when no parameter moves by 1e-5). Returns ``(bandwidth, score, steps)``:
    the score as statsmodels states it (mean log-likelihood for ``"ml"``, ``imse`` for
    ``"ls"``)."""
    cont, disc = layout.continuous, layout.discrete
    top = jnp.asarray(mixed.discrete_bounds(layout), jnp.float32)
    centred = data[:, cont] - data[:, cont].mean(axis=0)  # float64 on the host
    present = []
    for i, j in enumerate(disc):
        lev = layout.levels[j]
        size = len(lev) + 1 if layout.var_type[j] == "u" else lev[1] - lev[0] + 1
        present.append(jnp.asarray(np.isin(np.arange(size), codes[:, i])))
    args = (jnp.asarray(centred, jnp.float32), jnp.asarray(codes),
            None if weights is None else jnp.asarray(weights / weights.sum(), jnp.float32),
            top, tuple(present))  # fmt: skip
    frac = start[disc] / np.asarray(top)
    params = (jnp.log(jnp.asarray(start[cont], jnp.float32)),
              jnp.asarray(np.log(frac / (1 - frac)), jnp.float32))  # fmt: skip
    opt_state = _OPTIMIZER.init(params)
    best, best_value, steps = params, np.inf, 0
    for steps in range(1, max_steps + 1):  # noqa: B007 - the count is reported
        new, opt_state, value = _cv_step(params, opt_state, *args, layout=layout,
                                         objective=objective)  # fmt: skip
        value = float(value)
        if value < best_value:
            best, best_value = params, value
        if not all(bool(jnp.all(jnp.isfinite(p))) for p in new):
            break
        moved = max(float(jnp.max(jnp.abs(a - b))) if a.size else 0.0
                    for a, b in zip(new, params, strict=True))  # fmt: skip
        params = new
        if moved < 1e-5:
            break
    final = float(_objective_program(params, *args, layout=layout, objective=objective))
    if final < best_value:
        best, best_value = params, final
    out = np.empty(len(layout.var_type))
    out[cont] = np.exp(np.asarray(best[0], np.float64))
    out[disc] = np.asarray(top * jax.nn.sigmoid(best[1]), np.float64)
    score = -best_value if objective == "ml" else best_value
    return _into_range(layout, out), score, steps


def _into_range(layout, bw: np.ndarray) -> np.ndarray:
    """Each discrete ``lambda`` into its valid range (where float32's sigmoid, or a scaling,
    lands on or beyond an end): ``[1e-30, (c - 1) / c]`` unordered, ``[1e-30, 1 - 1e-12]``
    ordered."""
    out = bw.copy()
    top = mixed.discrete_bounds(layout)
    high = np.where(top < 1.0, top, 1.0 - 1e-12)
    out[layout.discrete] = np.clip(out[layout.discrete], 1e-30, high)
    return out
