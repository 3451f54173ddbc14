"""Mixup and cutmix on device: each example is blended with (mixup) or pasted into by (cutmix) a
partner from the same replica, and its loss weighs the two labels by the mixing weight.

The partner of local example j is example j XOR 1 (so a replica's batch must be even). Pipeline
p of k hands its replicas consecutive slices of its rows (research/data/pipeline.py), so with one
input pipeline, as on one worker, that partner is the example at global position XOR 1: the
same pairs for any replica count. With k > 1 workers a pipeline's rows stride the global batch,
and pairs form among a worker's rows: they differ across worker counts (each example's own draws
do not, see preprocess.Draws).

Per example, keyed by its global position: whether it mixes (mix_prob), mixup or cutmix
(switch_prob when both alphas are on), lam from Beta(alpha, alpha), and cutmix's box centre. The
box has area fraction 1 - lam before clipping to the image; lam is then the share of the
example's own pixels that remains. An example whose partner weighs 0 (a skipped bad example's
placeholder) stays unmixed.
"""

import tensorflow as tf

from research.data import preprocess


def enabled(cfg):
  return cfg is not None and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0)


def mix(x, labels, weights, cfg, seed, positions=None, global_batch=0):
  """float [B, H, W, C] images → (mixed images, partner labels, lam [B]); (x, None, None) when
  mixing is off. The loss of example i is lam·CE(labels[i]) + (1 - lam)·CE(partner labels[i])."""
  if not enabled(cfg):
    return x, None, None
  b = tf.shape(x)[0]
  h, w = x.shape[1], x.shape[2]
  draws = preprocess.Draws(seed, b, positions, global_batch)
  salt = preprocess.MIXING_SALT
  partner = tf.bitwise.bitwise_xor(tf.range(b), 1)
  x_b, labels_b = tf.gather(x, partner), tf.gather(labels, partner)
  mixed = draws.uniform(salt) < cfg.mix_prob
  if weights is not None:
    mixed &= tf.gather(weights, partner) > 0
  if cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0:
    cut = draws.uniform(salt + 1) < cfg.switch_prob
  else:
    cut = tf.fill([b], cfg.cutmix_alpha > 0)
  lam = tf.ones([b])
  out = x
  if cfg.mixup_alpha > 0:
    lam_mixup = draws.beta(salt + 2, cfg.mixup_alpha)
    blend = lam_mixup[:, None, None, None]
    chosen = mixed & ~cut
    out = tf.where(chosen[:, None, None, None], blend * x + (1.0 - blend) * x_b, out)
    lam = tf.where(chosen, lam_mixup, lam)
  if cfg.cutmix_alpha > 0:
    inside, lam_cut = _box(draws, salt, cfg.cutmix_alpha, h, w)
    chosen = mixed & cut
    out = tf.where(chosen[:, None, None, None] & inside, x_b, out)
    lam = tf.where(chosen, lam_cut, lam)
  return out, labels_b, lam


def _box(draws, salt, alpha, h, w):
  """Cutmix's boxes: (bool [B, H, W, 1] inside the box, lam [B] the area outside it)."""
  side = tf.sqrt(1.0 - draws.beta(salt + 3, alpha))
  cut_h = tf.cast(tf.round(side * h), tf.int32)
  cut_w = tf.cast(tf.round(side * w), tf.int32)
  cy, cx = draws.integers(salt + 4, h), draws.integers(salt + 5, w)
  top, bottom = tf.clip_by_value(cy - cut_h // 2, 0, h), tf.clip_by_value(cy + cut_h // 2, 0, h)
  left, right = tf.clip_by_value(cx - cut_w // 2, 0, w), tf.clip_by_value(cx + cut_w // 2, 0, w)
  rows = tf.range(h)[None, :, None, None]
  cols = tf.range(w)[None, None, :, None]

  def col(v):
    return v[:, None, None, None]

  inside = ((rows >= col(top)) & (rows < col(bottom)) & (cols >= col(left))
            & (cols < col(right)))
  area = tf.cast((bottom - top) * (right - left), tf.float32)
  return inside, 1.0 - area / float(h * w)


def dominant(labels, partner_labels, lam):
  """The label a mixed example counts a hit against in training accuracy: its own when lam ≥
  0.5, else its partner's."""
  if partner_labels is None:
    return labels
  return tf.where(lam >= 0.5, labels, partner_labels)
