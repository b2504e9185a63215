"""The run's plots can be read: the legend hides no data, the routing plot says what is ideal."""
import numpy as np
import pytest

from stpr.train import plots as P


@pytest.fixture
def figures(monkeypatch):
    """The Figure each plot function saves, after layout (as written to the PNG)."""
    saved = []
    real = P._save

    def keep(fig, path):
        out = real(fig, path)
        saved.append(fig)
        return out

    monkeypatch.setattr(P, "_save", keep)
    return saved


def test_accuracy_legend_does_not_cover_the_data(tmp_path, figures):
    # Points in every corner of the axes, where a legend inside would sit on them.
    P.plot_accuracy_curve({"StPR (routing=td)": [2.0, 98.0, 3.0, 97.0], "frame mean only": [97.0, 2.0, 96.0, 4.0]},
                          tmp_path / "c.png")
    fig = figures[-1]
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    assert not legend.overlaps(axes_box)
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)  # not cut off


@pytest.mark.parametrize("experts", [3, 10])  # grouped bars, and the heatmap beyond 8 experts
def test_routing_plot_states_the_ideal(tmp_path, figures, experts):
    P.plot_routing_weights(np.full((experts, experts), 1.0 / experts), tmp_path / "r.png")
    assert "ideal: task j's videos go to expert j" in figures[-1].axes[0].get_title()


def test_the_routing_legend_covers_no_bar(tmp_path, figures):
    P.plot_routing_weights(np.eye(4), tmp_path / "r.png")  # full-height bars in every group
    fig = figures[-1]
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)


def test_coinciding_accuracy_curves_stay_visible(tmp_path, figures):
    same = [90.0, 80.0, 70.0]
    P.plot_accuracy_curve({"StPR (routing=td)": same, "oracle routing": same, "frame mean only": same},
                          tmp_path / "c.png")
    lines = figures[-1].axes[0].get_lines()
    assert lines[0].get_zorder() > max(line.get_zorder() for line in lines[1:])  # the method on top
    styles = [(line.get_linestyle(), line.get_marker()) for line in lines]
    assert len(set(styles)) == len(styles)  # and the others can be told apart under it
