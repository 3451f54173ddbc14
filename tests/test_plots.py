"""The pictures read at a glance: every label present, no two labels overlapping, no font below
plots.MIN_FONT, counts in the cells of small matrices, the most confused pairs of large ones."""

import os

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from research.core import plots


def _confusion(k, seed=0):
  rng = np.random.default_rng(seed)
  matrix = rng.integers(0, 5, size=(k, k))
  matrix[np.arange(k), np.arange(k)] = rng.integers(50, 200, size=k)
  return matrix


def _texts(fig):
  """Every visible text of the figure, tick labels included."""
  def is_text(artist):
    return hasattr(artist, 'get_text') and hasattr(artist, 'get_fontsize')

  return [t for t in fig.findobj(is_text) if t.get_visible() and t.get_text().strip()]


def _overlapping(texts, renderer):
  """Pairs of texts that share more than a pixel's width and height."""
  boxes = [t.get_window_extent(renderer) for t in texts]

  def overlap(a, b):
    both = a.intersection(a, b)
    return both is not None and both.width > 1 and both.height > 1

  return [(a.get_text(), b.get_text()) for i, a in enumerate(texts) for j, b in enumerate(texts)
          if i < j and overlap(boxes[i], boxes[j])]


def _tick_labels(fig):
  return [t for ax in fig.axes for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels()
          if t.get_visible() and t.get_text()]


class ConfusionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(10, 100)
  def test_matrix_names_every_class_legibly(self, k):
    names = [f'class_{i}' for i in range(k)]
    fig = plots.confusion_figure(_confusion(k), names, title='cnn on test')
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = _tick_labels(fig)
    self.assertContainsSubset(names, {t.get_text() for t in labels})
    self.assertEmpty(_overlapping(labels, renderer))
    self.assertGreaterEqual(min(t.get_fontsize() for t in _texts(fig)), plots.MIN_FONT)
    # the plot fits the figure: nothing drawn outside the canvas
    width, height = fig.canvas.get_width_height()
    for t in labels:
      box = t.get_window_extent(renderer)
      self.assertBetween(box.x0, -1, width + 1)
      self.assertBetween(box.y1, -1, height + 1)

  def test_small_matrix_shows_each_count_in_its_cell_readable_on_its_shade(self):
    matrix = _confusion(10)
    fig = plots.confusion_figure(matrix, [str(i) for i in range(10)])
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    for i in range(10):
      t = cells[(i, i)]
      self.assertEqual(t.get_text(), str(matrix[i, i]))
      self.assertEqual(t.get_color(), 'white')  # on the dark diagonal
    off = [(i, j) for i in range(10) for j in range(10) if i != j and matrix[i, j]]
    self.assertEqual(cells[off[0]].get_text(), str(matrix[off[0]]))
    self.assertEqual(cells[off[0]].get_color(), 'black')
    self.assertEmpty(_overlapping(list(ax.texts), fig.canvas.get_renderer()))
    self.assertIn('accuracy', ax.get_title())

  def test_more_than_a_hundred_classes_show_the_most_confused_pairs(self):
    k = 150
    matrix = _confusion(k)
    matrix[3, 7] = 90  # the worst confusion by far
    names = [f'c{i}' for i in range(k)]
    fig = plots.confusion_figure(matrix, names)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    self.assertEqual(labels[0], 'c3 → c7')
    self.assertLen(labels, plots.TOP_PAIRS)

  def test_png_is_written_and_its_pixels_returned(self):
    path = os.path.join(self.create_tempdir().full_path, 'confusion.png')
    pixels = plots.confusion(_confusion(10), [str(i) for i in range(10)], path)
    with Image.open(path) as image:
      self.assertEqual(image.size, (pixels.shape[1], pixels.shape[0]))
    self.assertEqual(pixels.dtype, np.uint8)
    self.assertGreater(pixels.std(), 10)  # not blank


class InputGridTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((64, 1), (4, 3))
  def test_every_image_titled_by_its_class_without_overlap(self, n, channels):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(n, 28, 28, channels)).astype(np.float32)
    labels = rng.integers(0, 10, size=n)
    names = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight',
             'a rather long class name']
    path = os.path.join(self.create_tempdir().full_path, 'inputs.png')
    fig = plots.input_grid_figure(images, labels, names)
    fig.canvas.draw()
    titles = [ax.title for ax in fig.axes if ax.title.get_text()]
    self.assertEqual([t.get_text() for t in titles],
                     [plots.shorten(names[i], 16) for i in labels])
    self.assertEmpty(_overlapping(titles, fig.canvas.get_renderer()))
    self.assertGreaterEqual(min(t.get_fontsize() for t in titles), plots.MIN_FONT)
    pixels = plots.input_grid(images, labels, names, path)
    self.assertTrue(os.path.exists(path))
    self.assertEqual(pixels.shape[-1], 3)
