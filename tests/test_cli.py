"""The jaxkde command end to end on the shipped data, and its error handling."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxkde.cli import main


def test_sample_writes_a_png_grid_and_prints_log_densities(tmp_path, capsys):
    out = tmp_path / "digits.png"
    rc = main(
        [
            "sample",
            "--digit",
            "7",
            "-n",
            "5",
            "--components",
            "20",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (5 * (2 * 56 + 8) + 6, 56 + 12)  # (width, height)
        pixels = np.asarray(img)
    assert pixels.std() > 10  # digits, not a blank canvas
    text = capsys.readouterr().out
    assert "5 samples of digit 7" in text
    values = [float(line.split()[-1]) for line in text.splitlines() if "source image" in line]
    assert len(values) == 5 and all(np.isfinite(values))


def test_sample_npy_is_deterministic_per_seed(tmp_path):
    paths = [tmp_path / f"{i}.npy" for i in range(3)]
    for path, seed in zip(paths, ["3", "3", "4"], strict=True):
        assert main(["sample", "-n", "4", "--seed", seed, "--out", str(path)]) == 0
    a, b, c = (np.load(p) for p in paths)
    assert a.shape == (4, 28, 28) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_score_runs_end_to_end(capsys):
    rc = main(
        [
            "score",
            "--train",
            "test",
            "--test",
            "test",
            "--limit",
            "400",
            "--bandwidth",
            "0.3",
            "--batch-size",
            "128",
        ]
    )
    assert rc == 0
    out = capsys.readouterr()
    line = out.out.strip().splitlines()[-1]
    assert "mean log-likelihood of 400 test images" in line and "+/-" in line
    mean = float(line.split(": ")[-1].split()[0])
    assert np.isfinite(mean)
    assert "400/400" in out.err  # the progress bar reached the end


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--digit", "11"], "must be a digit 0-9"),
        (["sample", "-n", "0"], "must be a positive integer"),
        (["sample", "--scaling-factor", "-1"], "must be a number >= 0"),
        (["sample", "--bandwidth", "-2"], "rule name or a positive number"),
        (["score", "--train", "validation"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_readable_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--out", "digits.jpg"], "--out must end in .png or .npy"),
        (["sample", "--data-dir", "/nonexistent/mnist"], "not found in /nonexistent/mnist"),
        (["sample", "--bandwidth", "scot"], "bandwidth rule must be one of"),
    ],
)
def test_runtime_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxkde: error:") and message in err[0]


def test_module_entry_point_help():
    done = subprocess.run(
        [sys.executable, "-m", "jaxkde", "sample", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--scaling-factor" in done.stdout
