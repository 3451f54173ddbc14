"""The pictures a run leaves: its input grid, confusion matrices and corruption charts; and
validation curves of several runs side by side (launch.results).

Drawn with matplotlib's headless Agg backend (no display needed, safe in worker processes), at
sizes and fonts chosen so that each reads at a glance: the input grid for up to 64 images, the
confusion matrix for 10 to 100 classes (beyond that, the most confused pairs, which is what a
reader looks for in a matrix too large to see), and accuracy against corruption severity.
Each function saves a PNG and returns the figure's pixels (uint8 RGB) for TensorBoard.
"""

import numpy as np

from research.core import outputs

DPI = 100
# The smallest font any picture uses, in points: legible in a PNG viewer at 100%.
MIN_FONT = 7
# Up to this many classes the matrix shows each cell's count; beyond it the cells get too small.
COUNTS_UP_TO = 25
# Above this many classes the matrix is replaced by its most confused pairs.
MATRIX_UP_TO = 100
TOP_PAIRS = 30


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _finish(fig, path):
  """Saves `fig` to `path` (a failed write is one line, as for every output) and returns its
  pixels."""
  plt = _pyplot()
  fig.canvas.draw()
  pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  try:
    fig.savefig(path, dpi=DPI)
  except OSError as e:
    raise outputs.write_error('image', path, e) from None
  finally:
    plt.close(fig)
  return pixels


def input_grid_figure(images, labels, class_names, cols=8):
  """Float images in [-1, 1] (as the model sees them), each titled with its class name."""
  plt = _pyplot()
  images = np.clip((np.asarray(images) + 1.0) * 127.5, 0, 255).astype(np.uint8)
  n = len(images)
  cols = min(cols, n)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), dpi=DPI,
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if i >= n:
      continue
    image = images[i]
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=255,
              interpolation='nearest')
    ax.set_title(shorten(class_names[labels[i]], 16), fontsize=9)
  fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2)
  return fig


def input_grid(images, labels, class_names, path, cols=8):
  """Saves the input grid as a PNG; returns its pixels."""
  return _finish(input_grid_figure(images, labels, class_names, cols), path)


def shorten(name, width):
  name = str(name)
  return name if len(name) <= width else name[:width - 1] + '…'


def confusion_figure(matrix, class_names, title=''):
  """Rows true, columns predicted; shaded by the fraction of the row, counts in the cells when
  they fit. More than MATRIX_UP_TO classes: the TOP_PAIRS most confused (true, predicted)."""
  matrix = np.asarray(matrix)
  k = len(matrix)
  if k > MATRIX_UP_TO:
    return _pairs_figure(matrix, class_names, title)
  plt = _pyplot()
  # 100 classes at MIN_FONT need ~13 px a row; fewer get more room, up to a 16-inch figure.
  side = min(max(4.5, 0.45 * k + 2.0), 16.0)
  fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=DPI)
  frac = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  image = ax.imshow(frac, cmap='Blues', vmin=0.0, vmax=1.0)
  cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
  cbar.set_label('fraction of the true class', fontsize=9)
  cbar.ax.tick_params(labelsize=8)
  label_size = 9 if k <= 30 else MIN_FONT
  names = [shorten(n, 14) for n in class_names]
  ticks = np.arange(k)
  # Vertical column labels past 10 classes: a label then takes a font's height, not its length.
  ax.set_xticks(ticks, names, rotation=90 if k > 10 else 0, fontsize=label_size)
  ax.set_yticks(ticks, names, fontsize=label_size)
  ax.set_xlabel('predicted class', fontsize=10)
  ax.set_ylabel('true class', fontsize=10)
  if k <= COUNTS_UP_TO:
    for i in range(k):
      for j in range(k):
        if matrix[i, j] or i == j:
          ax.text(j, i, f'{int(matrix[i, j])}', ha='center', va='center',
                  fontsize=9 if k <= 12 else 8, color='white' if frac[i, j] > 0.5 else 'black')
  accuracy = np.trace(matrix) / max(matrix.sum(), 1)
  ax.set_title(f'{title + ": " if title else ""}{int(matrix.sum()):,} examples, accuracy '
               f'{accuracy:.2%}', fontsize=11)
  fig.tight_layout()
  return fig


def _pairs_figure(matrix, class_names, title):
  plt = _pyplot()
  off = matrix.copy()
  np.fill_diagonal(off, 0)
  order = np.argsort(off, axis=None)[::-1][:TOP_PAIRS]
  pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j]]
  fig, ax = plt.subplots(figsize=(9, 1.5 + 0.3 * max(len(pairs), 1)), dpi=DPI)
  counts = [int(off[i, j]) for i, j in pairs]
  labels = [f'{shorten(class_names[i], 20)} → {shorten(class_names[j], 20)}' for i, j in pairs]
  ax.barh(np.arange(len(pairs)), counts, color='tab:blue')
  ax.set_yticks(np.arange(len(pairs)), labels, fontsize=9)
  ax.invert_yaxis()
  for y, c in enumerate(counts):
    ax.text(c, y, f' {c}', va='center', fontsize=9)
  ax.set_xlabel('examples of the true class (left) predicted as the other', fontsize=10)
  accuracy = np.trace(matrix) / max(matrix.sum(), 1)
  ax.set_title(f'{title + ": " if title else ""}the {len(pairs)} most confused pairs of '
               f'{len(matrix)} classes (accuracy {accuracy:.2%})', fontsize=11)
  fig.tight_layout()
  return fig


def confusion(matrix, class_names, path, title=''):
  """Saves the confusion picture as a PNG; returns its pixels."""
  return _finish(confusion_figure(matrix, class_names, title), path)


def corruption_chart_figure(clean, table, title=''):
  """Accuracy against severity, a line per corruption ({name: {severity: accuracy}}); the clean
  accuracy as a dashed line above them."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=DPI)
  ax.axhline(clean, color='black', linestyle='--', linewidth=1)
  ax.text(5.05, clean, f'clean {clean:.1%}', va='center', fontsize=9)
  cmap = plt.get_cmap('tab10')
  for i, (name, levels) in enumerate(table.items()):
    severities = [int(s) for s in levels]
    values = [levels[s] for s in levels]
    ax.plot(severities, values, marker='o', color=cmap(i % 10), label=name,
            linestyle='-' if len(values) > 1 else 'none')
  ax.set_xticks([1, 2, 3, 4, 5])
  ax.set_xlim(0.7, 5.9)
  ax.set_ylim(0.0, 1.02)
  ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
  ax.tick_params(labelsize=9)
  ax.set_xlabel('severity', fontsize=10)
  ax.set_ylabel('accuracy', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=9, loc='center left', bbox_to_anchor=(1.02, 0.5), frameon=False)
  mean = np.mean([a for levels in table.values() for a in levels.values()])
  ax.set_title(f'{title + ": " if title else ""}accuracy under corruption (mean {mean:.1%})',
               fontsize=11)
  fig.tight_layout()
  return fig


def corruption_chart(clean, table, path, title=''):
  """Saves the corruption chart as a PNG; returns its pixels."""
  return _finish(corruption_chart_figure(clean, table, title), path)


def curves_figure(curves, labels):
  """Validation accuracy and loss against the step: `curves` holds each run's
  {'accuracy'|'loss': [(step, value), ...]}, `labels` their legend entries."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for run, label in zip(curves, labels):
    for ax, name in zip(axes, ('accuracy', 'loss')):
      if run.get(name):
        ax.plot(*zip(*run[name]), marker='.', label=label)
  for ax, name in zip(axes, ('accuracy', 'loss')):
    ax.set_xlabel('step')
    ax.set_title(f'validation {name}')
    ax.grid(alpha=0.3)
  if any(curves):
    axes[0].legend(fontsize=MIN_FONT + 1, loc='lower right')
  fig.tight_layout()
  return fig


def curves(curves_of_runs, labels, path):
  return _finish(curves_figure(curves_of_runs, labels), path)
