"""Hand-worked checks of stpr.train.metrics and smoke/atomicity checks of stpr.train.plots."""
from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.axes
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from stpr.train import metrics as M
from stpr.train import plots as P

N = np.nan
PNG_SIG = b"\x89PNG\r\n\x1a\n"

# Running example: 3 tasks of 2, 3, 5 classes with 10, 10, 20 test videos.
CORRECT = np.array([[8, 0, 0],
                    [7, 9, 0],
                    [6, 5, 8]])
TOTAL = np.array([[10, 0, 0],
                  [10, 10, 0],
                  [10, 10, 20]])
CLASSES = [2, 3, 5]
# 8/10=80; 7/10=70, 9/10=90; 6/10=60, 5/10=50, 8/20=40
A3 = np.array([[80.0, N, N],
               [70.0, 90.0, N],
               [60.0, 50.0, 40.0]])


# ---------------------------------------------------------------- metrics

def test_accuracy_matrix_from_counts():
    np.testing.assert_allclose(M.accuracy_matrix(CORRECT, TOTAL), A3, equal_nan=True)


def test_accuracy_matrix_ignores_above_diagonal():
    # Garbage above the diagonal (even total 0 or correct > total) must not matter.
    c, t = CORRECT.copy(), TOTAL.copy()
    c[0, 2], t[0, 1] = 99, 0
    np.testing.assert_allclose(M.accuracy_matrix(c, t), A3, equal_nan=True)


def test_class_weighted_differs_from_plain_mean():
    # (60*2 + 50*3 + 40*5) / (2+3+5) = (120+150+200)/10 = 47.0; plain mean (60+50+40)/3 = 50.0
    assert M.class_weighted_accuracy(A3, CLASSES) == pytest.approx(47.0)
    assert np.nanmean(A3[-1]) == pytest.approx(50.0)


def test_class_weighted_earlier_rows():
    assert M.class_weighted_accuracy(A3, CLASSES, row=0) == pytest.approx(80.0)
    # (70*2 + 90*3) / 5 = (140 + 270) / 5 = 82.0
    assert M.class_weighted_accuracy(A3, CLASSES, row=1) == pytest.approx(82.0)
    assert M.class_weighted_accuracy(A3, CLASSES, row=-2) == pytest.approx(82.0)


def test_accuracy_curve():
    assert M.accuracy_curve(A3, CLASSES) == pytest.approx([80.0, 82.0, 47.0])


def test_pooled_accuracy():
    # (6+5+8) / (10+10+20) = 19/40 = 47.5 (vs class-weighted 47.0)
    assert M.pooled_accuracy([6, 5, 8], [10, 10, 20]) == pytest.approx(47.5)
    assert M.pooled_accuracy([0, 0], [3, 4]) == 0.0


def test_backward_forgetting_hand_value():
    # j=0: 80-60 = 20; j=1: 90-50 = 40; BWF = (20+40)/2 = 30.0
    assert M.backward_forgetting(A3) == pytest.approx(30.0)


def test_backward_forgetting_partial_matrix():
    # Two of three tasks done: last row given is row 1. BWF = (80-70)/1 = 10.0
    assert M.backward_forgetting(A3[:2]) == pytest.approx(10.0)


def test_backward_forgetting_negative_is_backward_transfer():
    # 40 -> 60 on task 0: BWF = 40-60 = -20 (got better, not forgotten)
    assert M.backward_forgetting(np.array([[40.0, N], [60.0, 70.0]])) == pytest.approx(-20.0)


def test_single_task():
    A = np.array([[73.5, N, N]])
    assert M.backward_forgetting(A) is None
    assert M.class_weighted_accuracy(A, [4, 4, 4]) == pytest.approx(73.5)
    assert M.accuracy_curve(A, [4, 4, 4]) == pytest.approx([73.5])


def test_task_with_one_class():
    # classes [1, 4]: (100*1 + 50*4) / 5 = 300/5 = 60.0 (plain mean would be 75.0)
    A = np.array([[100.0, N], [100.0, 50.0]])
    assert M.class_weighted_accuracy(A, [1, 4]) == pytest.approx(60.0)
    # one test video per task is enough: 1/1 = 100, 0/1 = 0
    np.testing.assert_allclose(M.accuracy_matrix([[1, 0], [1, 0]], [[1, 0], [1, 1]]),
                               [[100.0, N], [100.0, 0.0]], equal_nan=True)


def test_ties_equal_values():
    # Every entry 50: any weighting gives 50, nothing forgotten.
    A = np.array([[50.0, N, N], [50.0, 50.0, N], [50.0, 50.0, 50.0]])
    assert M.class_weighted_accuracy(A, [1, 7, 2]) == pytest.approx(50.0)
    assert M.accuracy_curve(A, [1, 7, 2]) == pytest.approx([50.0, 50.0, 50.0])
    assert M.backward_forgetting(A) == 0.0
    assert M.pooled_accuracy([5, 5, 5], [10, 10, 10]) == pytest.approx(50.0)


def test_inputs_not_mutated():
    A, c, t, k = A3.copy(), CORRECT.copy(), TOTAL.copy(), list(CLASSES)
    M.class_weighted_accuracy(A, k)
    M.backward_forgetting(A)
    M.accuracy_curve(A, k)
    M.accuracy_matrix(c, t)
    M.summary(c, t, k)
    np.testing.assert_array_equal(A, A3)  # NaN == NaN under assert_array_equal
    np.testing.assert_array_equal(c, CORRECT)
    np.testing.assert_array_equal(t, TOTAL)
    assert k == CLASSES


def test_summary_json_ready_partial_run():
    # 2 of 4 tasks done; rows beyond the diagonal are zero-padded counts.
    c = np.array([[8, 0, 0, 0], [7, 9, 0, 0]])
    t = np.array([[10, 0, 0, 0], [10, 10, 0, 0]])
    s = M.summary(c, t, [2, 3, 5, 1])
    assert s["accuracy_matrix"] == [[80.0, None, None, None], [70.0, 90.0, None, None]]
    assert s["acc"] == pytest.approx(82.0)          # (70*2 + 90*3)/5
    assert s["acc_pooled"] == pytest.approx(80.0)   # (7+9)/(10+10)
    assert s["bwf"] == pytest.approx(10.0)          # 80-70
    assert s["acc_curve"] == pytest.approx([80.0, 82.0])
    json.dumps(s, allow_nan=False)  # no NaN anywhere
    assert all(type(v) is float for v in [s["acc"], s["acc_pooled"], s["bwf"], *s["acc_curve"]])


def test_summary_one_task_bwf_null():
    s = M.summary([[3, 0]], [[4, 0]], [2, 2])
    assert s["bwf"] is None and s["acc"] == pytest.approx(75.0)
    assert json.loads(json.dumps(s, allow_nan=False))["bwf"] is None


@pytest.mark.parametrize("A, match", [
    (np.array([80.0, 70.0]), "2-D"),                               # 1-D
    (np.array([[80.0, N], [70.0, N]]), r"NaN at \[1, 1\]"),         # NaN on diagonal
    (np.array([[80.0, N], [N, 90.0]]), r"NaN at \[1, 0\]"),         # NaN below diagonal
    (np.array([[80.0, N], [70.0, 90.0], [1.0, 2.0]]), "3 rows for 2 tasks"),  # R > K
    (np.zeros((0, 3)), "0 rows"),
])
def test_bad_matrix(A, match):
    for f in (M.backward_forgetting, lambda a: M.class_weighted_accuracy(a, [1, 1, 1]),
              lambda a: M.accuracy_curve(a, [1, 1, 1])):
        with pytest.raises(ValueError, match=match):
            f(A)


def test_bad_counts():
    with pytest.raises(ValueError, match="task 1 has no test videos"):
        M.accuracy_matrix([[8, 0], [7, 0]], [[10, 0], [10, 0]])
    with pytest.raises(ValueError, match="same 2-D shape"):
        M.accuracy_matrix([[1, 0]], [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="same 2-D shape"):
        M.accuracy_matrix([1, 2], [2, 2])
    with pytest.raises(ValueError, match="3 rows for 2 tasks"):
        M.accuracy_matrix(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="not within"):
        M.accuracy_matrix([[5]], [[3]])
    with pytest.raises(ValueError, match="at least one test video"):
        M.pooled_accuracy([0, 0], [0, 0])
    with pytest.raises(ValueError, match="equal length"):
        M.pooled_accuracy([1, 2], [3])
    with pytest.raises(ValueError, match="task 1 has no test videos"):
        M.summary([[8, 0], [7, 0]], [[10, 0], [10, 0]], [1, 1])


def test_bad_row_and_classes():
    with pytest.raises(ValueError, match="row 3 out of range"):
        M.class_weighted_accuracy(A3, CLASSES, row=3)
    with pytest.raises(ValueError, match="row -4 out of range"):
        M.class_weighted_accuracy(A3, CLASSES, row=-4)
    with pytest.raises(ValueError, match="classes_per_task"):
        M.class_weighted_accuracy(A3, [2, 3])       # too short for row 2
    with pytest.raises(ValueError, match="classes_per_task"):
        M.class_weighted_accuracy(A3, [2, 0, 5])    # a task with no classes


# ---------------------------------------------------------------- plots

def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIG
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10  # not one flat colour
    assert not any(p.name.startswith(".tmp-") for p in path.parent.iterdir())  # atomic: no leftovers


def test_plot_accuracy_curve(tmp_path):
    out = P.plot_accuracy_curve({"StPR": [80.0, 82.0, 47.0], "frame mean only": [80.0, 60.0, 30.0]},
                                tmp_path / "plots" / "curve.png")  # parent folder is created
    assert out == tmp_path / "plots" / "curve.png"
    _check_png(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["curve.png"]


def test_plot_accuracy_curve_empty():
    with pytest.raises(ValueError, match="at least one"):
        P.plot_accuracy_curve({}, "unused.png")


def test_plot_accuracy_matrix_nan_cells(tmp_path):
    out = P.plot_accuracy_matrix(A3, tmp_path / "m.png", title="Run 1")
    _check_png(out)
    # A partial matrix (2 of 4 tasks) with a whole NaN block also renders.
    _check_png(P.plot_accuracy_matrix(A3[:2], tmp_path / "partial.png"))
    with pytest.raises(ValueError, match="2-D"):
        P.plot_accuracy_matrix(np.array([1.0, 2.0]), tmp_path / "bad.png")


def test_plot_routing_weights_bars(tmp_path, monkeypatch):
    # Count calls to Axes.bar / Axes.imshow to see which branch drew the chart.
    calls = {"bar": 0, "imshow": 0}

    def spy(name):
        orig = getattr(matplotlib.axes.Axes, name)

        def wrapper(self, *a, **k):
            calls[name] += 1
            return orig(self, *a, **k)
        return wrapper

    for name in list(calls):
        monkeypatch.setattr(matplotlib.axes.Axes, name, spy(name))
    W = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    _check_png(P.plot_routing_weights(W, tmp_path / "r.png"))
    assert calls == {"bar": 3, "imshow": 0}  # one bar series per expert
    W10 = np.full((4, 10), 0.1)
    W10[np.arange(4), np.arange(4)] = 0.55
    W10[1, 9] = np.nan  # an undefined cell must not break the heatmap
    _check_png(P.plot_routing_weights(W10, tmp_path / "r10.png"))
    assert calls == {"bar": 3, "imshow": 1}  # >8 experts: heatmap fallback


def test_plot_write_is_atomic_on_failure(tmp_path, monkeypatch):
    out = P.plot_accuracy_matrix(A3, tmp_path / "m.png")
    before = out.read_bytes()

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        P.plot_accuracy_matrix(A3[:2], out)
    assert out.read_bytes() == before  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # temp file cleaned up


def test_plots_leave_global_backend_alone(tmp_path):
    # Fresh interpreter: importing and plotting must not import pyplot or pick a backend.
    code = (
        "import sys, numpy as np\n"
        "from stpr.train import plots\n"
        f"plots.plot_accuracy_curve({{'a': [1.0, 2.0]}}, {str(tmp_path / 'c.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
