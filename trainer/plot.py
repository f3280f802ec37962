"""Loss curve as an image tensor (matplotlib, headless)."""
import numpy as np
import torch


def moving_average(values, window):
    """Mean of the last ``window`` values at each step (web/fluxlora.js draws the same line: keep the two in step)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curve_image(losses, learning_rates=None, width=768, height=432, markers=(), validation=()) -> torch.Tensor:
    """(1, H, W, 3) float image of raw loss, its moving average, the validation loss (``(step, loss)`` pairs), (right
    axis) the learning rate, and dashed vertical lines at ``markers`` (checkpoint steps)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width / 96, height / 96), dpi=96)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    steps = list(range(1, len(losses) + 1))
    if losses:
        ax.plot(steps, losses, color="#9ab7d3", linewidth=0.8, label="loss")
        ax.plot(steps, moving_average(losses, max(1, len(losses) // 20)), color="#1f4e79", linewidth=2, label="moving average")
    if validation:
        ax.plot([s for s, _ in validation], [v for _, v in validation], color="#3a9d4a", marker="o", markersize=3,
                linewidth=1.5, label="validation loss")
    for i, step in enumerate(markers):
        ax.axvline(step, color="#7a7a7a", linestyle="--", linewidth=0.8, label="checkpoint" if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
    if learning_rates:
        ax2 = ax.twinx()
        handles += ax2.plot(steps, learning_rates, color="#d08c2c", linewidth=1, label="learning rate")
        ax2.set_ylabel("learning rate")
    if handles:
        ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="upper right")
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba(), dtype=np.float32)[..., :3] / 255.0
    return torch.from_numpy(rgba.copy())[None]
