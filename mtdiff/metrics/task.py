"""Task metrics (classification accuracy, segmentation IoU) through scikit-learn.

Conventions (JSON-ready: plain Python numbers and lists, ``None`` for undefined values):

* ``classification_metrics``: ``accuracy`` = :func:`sklearn.metrics.accuracy_score`;
  ``per_class_accuracy[k]`` = recall of class ``k`` (correct / true samples of ``k``), ``None``
  when class ``k`` has no true sample; ``mean_per_class_accuracy`` = mean over the defined ones
  (balanced accuracy); ``confusion_matrix[i][j]`` = number of samples of true class ``i``
  predicted as ``j`` (:func:`sklearn.metrics.confusion_matrix` with ``labels=range(K)``).
* ``segmentation_metrics``: IoU is computed on the whole set (all pixels of all masks pooled,
  the usual benchmark convention, not a mean of per-image IoUs) with
  :func:`sklearn.metrics.jaccard_score` (``average=None``).
  A class absent from both the true and the predicted masks has no IoU (``None`` in
  ``per_class_iou``) and is **excluded** from ``mean_iou``; a class present in only one of them
  has IoU 0 and counts. With ``ignore_background=True`` class 0 is left out of ``mean_iou``
  (its IoU is still reported; its pixels still count as false positives / negatives of the
  other classes and in ``pixel_accuracy``). If no class is left to average, ``mean_iou`` is
  ``None``. ``pixel_accuracy`` = share of pixels whose predicted class equals the true one.
"""

from __future__ import annotations

import numpy as np

from mtdiff.errors import ConfigError


def _as_int_array(x, name: str) -> np.ndarray:
    try:
        import torch

        if torch.is_tensor(x):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(x)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ConfigError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ConfigError(f"{name} must hold integer class indices, got non-integer floats")
    return a.astype(np.int64)


def _check_pair(y_true, y_pred, num_classes, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} is invalid; give a positive integer")
    t = _as_int_array(y_true, f"{what} (true)")
    p = _as_int_array(y_pred, f"{what} (predicted)")
    if t.shape != p.shape:
        raise ConfigError(f"true {what} have shape {t.shape} but predicted {what} have shape {p.shape}; they must match")
    if t.size == 0:
        raise ConfigError(f"{what} are empty; give at least one")
    for arr, side in ((t, "true"), (p, "predicted")):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_classes:
            raise ConfigError(
                f"{side} {what} span [{lo}, {hi}] but num_classes={num_classes}; values must lie in [0, {num_classes})"
            )
    return t.ravel(), p.ravel()


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, per-class accuracy (recall), balanced accuracy and confusion matrix of label arrays."""
    from sklearn.metrics import accuracy_score, confusion_matrix  # lazy: keeps `import mtdiff.metrics` fast
    t, p = _check_pair(y_true, y_pred, num_classes, "labels")
    labels = list(range(int(num_classes)))
    cm = confusion_matrix(t, p, labels=labels)
    support = cm.sum(axis=1)
    per_class = [None if support[k] == 0 else float(cm[k, k] / support[k]) for k in labels]
    defined = [v for v in per_class if v is not None]
    return {
        "accuracy": float(accuracy_score(t, p)),
        "per_class_accuracy": per_class,
        "mean_per_class_accuracy": float(np.mean(defined)) if defined else None,
        "confusion_matrix": cm.astype(int).tolist(),
        "n": int(t.size),
    }


def segmentation_metrics(mask_true, mask_pred, num_classes: int, ignore_background: bool = False) -> dict:
    """Mean IoU (absent classes excluded), per-class IoU and pixel accuracy of integer masks."""
    from sklearn.metrics import jaccard_score  # lazy: keeps `import mtdiff.metrics` fast
    t, p = _check_pair(mask_true, mask_pred, num_classes, "masks")
    labels = list(range(int(num_classes)))
    # sklearn (1.9) only accepts zero_division in {0, 1, "warn"}: mark the absent classes ourselves
    iou = jaccard_score(t, p, labels=labels, average=None, zero_division=0)
    present = np.zeros(len(labels), dtype=bool)
    present[np.unique(t)] = True
    present[np.unique(p)] = True
    per_class = [float(v) if present[k] else None for k, v in enumerate(iou)]
    counted = [per_class[k] for k in labels if not (ignore_background and k == 0) and per_class[k] is not None]
    return {
        "mean_iou": float(np.mean(counted)) if counted else None,
        "per_class_iou": per_class,
        "pixel_accuracy": float(np.mean(t == p)),
        "n_classes_counted": len(counted),
        "ignore_background": bool(ignore_background),
        "n_pixels": int(t.size),
    }
