"""How well reward-model scores separate correct from incorrect responses."""
import numpy as np
from scipy import stats


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC via the Mann-Whitney U statistic (ties count half); nan without both classes."""
  pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
  if not len(pos) or not len(neg):
    return float("nan")
  ranks = stats.rankdata(np.concatenate([pos, neg]))
  return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def classification_report(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.0) -> dict:
  """Accuracy / precision / recall of `score > threshold` against 0/1 labels, and AUC."""
  pred = scores > threshold
  truth = labels > 0.5
  tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
  fn = int((~pred & truth).sum())
  return {"accuracy": float((pred == truth).mean()), "auc": auc(scores, labels),
          "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
          "positive_rate": float(truth.mean()), "n": int(len(labels))}
