"""The jaxkde command end to end on the shipped data, and its error handling."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxkde
from jaxkde.apps.cli import main
from jaxkde.apps.datasets import load_mnist
from jaxkde.apps.digits import sample_digits


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    """The output goes to a temporary file beside the target, renamed into place only once
    complete: a write that fails midway (disk full, a quota) leaves the old file readable."""
    out = tmp_path / "keep.npy"
    assert main(["sample", "-n", "3", "--seed", "1", "--out", str(out)]) == 0
    before = np.load(out)

    def failing_save(file, arr, *args, **kwargs):
        file.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", failing_save)
    assert main(["sample", "-n", "3", "--seed", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} cannot be written: no space left on device." in err
    assert ".part" not in err
    np.testing.assert_array_equal(np.load(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npy"]  # no temporary left


def test_sample_intensity_option_reaches_the_sampler(tmp_path, monkeypatch, capsys):
    import jaxkde.apps.cli as cli

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return sample_digits(*args, **kwargs)

    monkeypatch.setattr(cli, "sample_digits", spy)
    out = tmp_path / "s.npy"
    assert main(["sample", "-n", "2", "--out", str(out)]) == 0
    assert main(["sample", "-n", "2", "--intensity", "linear", "--out", str(out)]) == 0
    assert [kw["intensity"] for kw in seen] == ["calibrated", "linear"]
    assert (seen[0]["n_components"], seen[0]["scaling_factor"]) == (45, 0.45)
    assert "linear intensities" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sample", "--intensity", "sharp"])


def test_output_name_is_exactly_the_one_given(tmp_path, capsys):
    out = tmp_path / "X.NPY"
    assert main(["sample", "-n", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.NPY"]
    assert np.load(out).shape == (2, 28, 28)
    assert f"-> {out}" in capsys.readouterr().out


def test_ctrl_c_exits_130_quietly_without_partial_output(tmp_path, monkeypatch, capsys):
    import jaxkde.apps.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "sample_digits", interrupted)
    out = tmp_path / "digits.png"
    assert main(["sample", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "jaxkde: interrupted"
    assert not list(tmp_path.iterdir())


def test_an_internal_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    import jaxkde.apps.cli as cli

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "load_mnist", broken)
    assert main(["score", "--limit", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxkde: internal error: RuntimeError: boom")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--seed", "-1"], "argument --seed: must be an integer"),
        (["sample", "--bandwidth", "1e200"], "must lie in [1e-150, 1e150]"),
        (["sample", "--scaling-factor", "nan"], "must be a number >= 0"),
    ],
)
def test_more_bad_arguments_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_sizes_that_cannot_be_allocated_are_refused_before_allocating(tmp_path, capsys):
    assert main(["sample", "-n", "1000000000000", "--out", str(tmp_path / "s.npy")]) == 1
    err = capsys.readouterr().err
    assert "is too many" in err and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_huge_scaling_factor_gives_images_not_an_error(tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", "-n", "2", "--scaling-factor", "1e40", "--out", str(out)]) == 0
    images = np.load(out)
    assert np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1


def test_parzen_refuses_archives_and_pixels_out_of_range(tmp_path, capsys):
    archive = tmp_path / "s.npz"
    np.savez(archive, a=np.zeros((3, 784)))
    assert main(["parzen", "--samples", str(archive)]) == 1
    assert ".npz archive" in capsys.readouterr().err
    bytes_ = tmp_path / "bytes.npy"
    np.save(bytes_, np.full((3, 784), 200.0))
    assert main(["parzen", "--samples", str(bytes_)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "divide by 255" in err[0]


def test_inpaint_writes_completions_and_a_grid(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAXKDE_DATA_DIR", raising=False)
    monkeypatch.setattr("jaxkde.apps.cli.mnist_available", lambda split, data_dir=None: False)
    out = tmp_path / "inpaint.npy"
    assert main(["inpaint", "--digit", "4", "-n", "3", "--components", "20", "--out",
                 str(out)]) == 0  # fmt: skip
    done = np.load(out)
    assert done.shape == (3, 28, 28) and done.dtype == np.float32
    assert done.min() >= 0 and done.max() <= 1
    text = capsys.readouterr().out
    assert "completed from their top half" in text and "other test images" in text
    labels = [int(line.split()[-1]) for line in text.splitlines() if " label " in line]
    assert labels == [4, 4, 4]
    png = tmp_path / "inpaint.png"
    assert main(["inpaint", "-n", "2", "--keep", "left", "--components", "20", "--out",
                 str(png)]) == 0  # fmt: skip
    with Image.open(png) as img:
        assert img.size == (2 * (3 * 56 + 4 + 6) + 6, 56 + 12)
    assert main(["inpaint", "--out", str(tmp_path / "x.jpg")]) == 1
    assert "--out must end in .png or .npy" in capsys.readouterr().err
    assert main(["inpaint", "--digit", "3", "-n", "20000", "--out", str(out)]) == 1
    assert "more than the" in capsys.readouterr().err


def _two_processes(argv: list[str]) -> list[str]:
    """Run ``python -m jaxkde ARGV --distributed ...`` as 2 processes on localhost; stdouts."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(jaxkde.__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])  # fmt: skip
    extra = ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen([sys.executable, "-m", "jaxkde", *argv, *extra, "--process-id",
                               str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-2000:] for o in outs]
    return [o[0].decode() for o in outs]


@pytest.mark.slow
def test_score_and_parzen_under_jax_distributed(tmp_path, capsys):
    """The same figures from 2 processes (each holding half the KDE's rows) as from one; only
    process 0 prints them."""
    score = ["score", "--train", "test", "--test", "test", "--limit", "500", "--bandwidth", "0.3"]
    images, _ = load_mnist("test")
    np.save(tmp_path / "s.npy", images[6000:6300].astype(np.float32) / 255)
    parzen = ["parzen", "--samples", str(tmp_path / "s.npy"), "--limit", "300", "--validation",
              "test", "--validation-size", "300", "--sigma", "0.15", "0.2", "0.3"]  # fmt: skip
    for argv in (score, parzen):
        assert main(argv) == 0
        want = capsys.readouterr().out.strip().splitlines()[-1]
        first, second = _two_processes(argv)
        got = [line for line in first.splitlines() if not line.startswith("[Gloo]")][-1]
        number = re.compile(r"-?\d+\.\d+")
        assert number.sub("#", got.replace(" spread over 2 devices", "")) == number.sub("#", want)
        values = [[float(v) for v in number.findall(line)] for line in (got, want)]
        np.testing.assert_allclose(values[0], values[1], atol=0.011)
        assert [line for line in second.splitlines() if not line.startswith("[Gloo]")] == []


@pytest.mark.parametrize(("argv", "message"), [
    (["score", "--process-id", "0"], "need --distributed"),
    (["score", "--distributed", "--process-id", "0"], "give all of --coordinator"),
    (["score", "--distributed", "--coordinator", "localhost:1", "--num-processes", "2",
      "--process-id", "2"], "--process-id must be in 0 .. 1"),
])  # fmt: skip
def test_distributed_options_are_checked(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_write_failures_name_out_and_the_reason(tmp_path, monkeypatch, capsys):
    # A folder that cannot exist (its parent is a file), and a full disk reported by NumPy's
    # byte counts (no errno): the message names --out and says why, never a temporary name.
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "sub" / "s.npy"
    assert main(["sample", "-n", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} cannot be written: not a directory" in err
    assert ".part" not in err and "Traceback" not in err

    target = tmp_path / "full.npy"
    assert main(["sample", "-n", "2", "--out", str(target)]) == 0
    before = np.load(target)

    def numpy_full_disk(file, arr, *args, **kwargs):
        raise OSError("6272 requested and 0 written")

    monkeypatch.setattr(np, "save", numpy_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    assert main(["sample", "-n", "2", "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"--out {str(target)!r} cannot be written: no space left on device." in err
    assert "requested" not in err
    np.testing.assert_array_equal(np.load(target), before)
