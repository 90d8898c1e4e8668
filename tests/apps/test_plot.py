"""Plots: the curve and contours carry the grid densities; the CLI writes a real picture."""

from __future__ import annotations

import os
import stat

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

import jaxkde
from jaxkde.apps.cli import main


def test_density_curve_draws_the_grid_density():
    x = np.random.default_rng(0).standard_normal((500, 1))
    kde = jaxkde.KDE(bandwidth=0.3).fit(x)
    fig, ax = plt.subplots()
    assert jaxkde.apps.plot.density_curve(kde, ax, grid_size=200) is ax
    line = ax.get_lines()[0]
    res = kde.score_grid(200)
    assert np.allclose(line.get_xdata(), res.axes[0])
    assert np.allclose(line.get_ydata(), np.exp(res.log_density))
    plt.close(fig)


def test_density_band_draws_the_band_around_the_density():
    band = jaxkde.BootstrapBand(
        points=np.array([[1.0], [0.0], [2.0]]),
        density=np.array([0.5, 0.2, 0.3]),
        lower=np.array([0.4, 0.1, 0.2]),
        upper=np.array([0.6, 0.3, 0.4]),
        level=0.9,
    )
    fig, ax = plt.subplots()
    assert jaxkde.apps.plot.density_band(band, ax) is ax
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [0.0, 1.0, 2.0])  # sorted
    np.testing.assert_array_equal(line.get_ydata(), [0.2, 0.5, 0.3])
    (filled,) = ax.collections
    ys = filled.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.1) and ys.max() == pytest.approx(0.6)
    assert filled.get_label() == "90% bootstrap band"
    with pytest.raises(ValueError, match="1-D points"):
        jaxkde.apps.plot.density_band(band._replace(points=np.zeros((3, 2))), ax)
    plt.close(fig)


def test_density_contours_span_the_density():
    x = np.random.default_rng(1).standard_normal((500, 2)) * [1.0, 2.0]
    kde = jaxkde.KDE(bandwidth=0.4).fit(x)
    fig, ax = plt.subplots()
    jaxkde.apps.plot.density_contours(kde, ax, grid_size=64, levels=8)
    filled = ax.collections[0]
    peak = np.exp(kde.score_grid(64).log_density).max()
    assert filled.levels[0] <= 0.0 + 1e-12 and filled.levels[-1] >= peak
    assert len(fig.axes) == 2  # the colour bar
    plt.close(fig)


def test_density_contours_draw_the_probability_levels():
    x = np.random.default_rng(4).standard_normal((400, 2))
    kde = jaxkde.KDE(bandwidth=0.3).fit(x)
    fig, ax = plt.subplots()
    jaxkde.apps.plot.density_contours(kde, ax, grid_size=64, probs=[0.9, 0.5], n_samples=20_000)
    lines = ax.collections[-1]
    want = kde.density_levels([0.9, 0.5], n_samples=20_000).levels
    np.testing.assert_allclose(lines.levels, want)  # increasing levels: 90% first
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels and set(labels) <= {"50%", "90%"}
    with pytest.raises(ValueError, match="probs must lie in"):
        jaxkde.apps.plot.density_contours(kde, ax, grid_size=16, probs=[1.5])
    plt.close(fig)


def test_plots_refuse_the_wrong_dimension_and_unfitted_models():
    kde = jaxkde.KDE(bandwidth=0.4).fit(np.random.default_rng(2).standard_normal((50, 2)))
    with pytest.raises(ValueError, match="1-D data; got 2-D"):
        jaxkde.apps.plot.density_curve(kde)
    with pytest.raises(jaxkde.NotFittedError):
        jaxkde.apps.plot.density_contours(jaxkde.KDE())


def _picture(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_cli_plot_1d_npy_and_2d_csv(tmp_path, capsys):
    rng = np.random.default_rng(3)
    npy = tmp_path / "x.npy"
    np.save(npy, np.concatenate([rng.normal(0, 1, 400), rng.normal(5, 0.5, 200)]))
    out1 = tmp_path / "curve.png"
    assert main(["plot", "--data", str(npy), "--out", str(out1)]) == 0
    assert "600 points, 1-D" in capsys.readouterr().out
    img = _picture(out1)
    assert img.shape == (480, 640, 3)
    # Not blank: a white background with a coloured curve on it.
    white = np.all(img > 245, axis=-1).mean()
    assert 0.5 < white < 0.99
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)  # matplotlib's first colour, C0
    assert blue.sum() > 500

    csv = tmp_path / "xy.csv"
    xy = rng.standard_normal((300, 3))
    np.savetxt(csv, xy, delimiter=",", header="a,b,c", comments="")
    out2 = tmp_path / "contours.png"
    argv = ["plot", "--data", str(csv), "--columns", "a", "2", "--bandwidth", "0.5",
            "--out", str(out2)]  # fmt: skip
    assert main(argv) == 0
    assert "300 points, 2-D (a, c)" in capsys.readouterr().out
    img = _picture(out2)
    assert img.shape == (520, 640, 3)
    colours = np.unique(img.reshape(-1, 3), axis=0).shape[0]
    assert colours > 50  # filled contours in many shades, not a blank canvas
    assert not list(tmp_path.glob(".contours.png.*"))  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out2.stat().st_mode) == 0o666 & ~umask  # as a plain open() makes it


def _npy(values):
    return lambda p: np.save(p / "d.npy", np.asarray(values))


def _text(name, text):
    return lambda p: (p / name).write_text(text)


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (_npy(np.zeros((5, 3))), ["--data", "d.npy"], "choose one or two"),
        (_npy(np.zeros(5)), ["--data", "d.npy", "--out", "f.jpg"], "--out must end"),
        (_text("d.txt", "1\n"), ["--data", "d.txt"], "--data must end in .npy or .csv"),
        (_npy([1.0, np.nan]), ["--data", "d.npy"], "NaN or infinite"),
        (_text("d.csv", "a,b\n1,2\n"), ["--data", "d.csv", "--columns", "z"], "no column 'z'"),
        (_npy(np.zeros((5, 2))), ["--data", "d.npy", "--columns", "4"], "out of range"),
        (_text("d.csv", ""), ["--data", "d.csv"], "--data 'd.csv' is empty"),
        (
            _text("d.csv", "a,b\n"),
            ["--data", "d.csv"],
            "--data 'd.csv' has a header (2 column(s)) but no rows",
        ),
        (_npy(np.zeros((0, 2))), ["--data", "d.npy"], "--data 'd.npy' has no rows"),
    ],
)
def test_cli_plot_bad_input_is_one_line(tmp_path, monkeypatch, capsys, make, args, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    argv = ["plot", *args] if "--out" in args else ["plot", *args, "--out", "f.png"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxkde: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "f.png").exists()


def test_cli_plot_reads_a_csv_with_a_byte_order_mark(tmp_path, capsys):
    # Spreadsheets save "CSV UTF-8" with a BOM before the first column's name.
    rng = np.random.default_rng(4)
    csv = tmp_path / "bom.csv"
    rows = "\n".join(f"{a},{b}" for a, b in rng.normal(size=(200, 2)))
    csv.write_bytes(("height,weight\n" + rows + "\n").encode("utf-8-sig"))
    out = tmp_path / "c.png"
    assert main(["plot", "--data", str(csv), "--columns", "height", "--out", str(out)]) == 0
    assert "200 points, 1-D (height)" in capsys.readouterr().out
