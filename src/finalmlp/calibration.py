"""Post-hoc calibration of click probabilities: Platt scaling and isotonic regression.

A model trained for AUC can rank well and still be off in level (a 0.3 that clicks 20% of the
time). A calibrator is a monotone map ``p -> p'`` fitted on the validation split after
training, so rankings (AUC) stay as they are while logloss and calibration error improve::

    train.calibration: platt | isotonic    (or: finalmlp calibrate RUN_DIR --method ...)
      -> fit on (validation probabilities, labels)
      -> RUN_DIR/calibration.json          JSON state, covered by the bundle's content hash
      -> applied after the model by every scoring path (evaluate, predict with PyTorch or
         ONNX Runtime, the HTTP service): see :meth:`finalmlp.bundle.Run.calibrate`

- :class:`PlattCalibrator`: ``sigmoid(a * logit(p) + b)``, ``a, b`` by Newton's method on the
  logloss (Platt 1999, without his label smoothing: validation sets here are large).
- :class:`IsotonicCalibrator`: the non-decreasing step function of pool-adjacent-violators,
  made continuous by linear interpolation between the blocks' centres (mean probability, click
  rate), and clipped to ``[eps, 1 - eps]`` so a block of only clicks or only non-clicks
  never gives an infinite logloss.

The ONNX graph keeps emitting the raw probability; calibration is applied after ONNX Runtime,
in NumPy, so one exported graph serves the run whatever its calibration.

Several tasks: :class:`Calibration` holds one calibrator per task, each fitted on the rows
labelled for its task. ``calibration.json`` of a one-task run is its calibrator's state (as
before tasks existed); with several it is ``{"method": ..., "tasks": {name: state, ...}}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np

from finalmlp.errors import ConfigError, DataError, NotFittedError
from finalmlp.metrics import as_task_matrix, expected_calibration_error, log_loss, roc_auc

CALIBRATION_FILE = "calibration.json"
LOGIT_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps] before taking the logit
ISOTONIC_EPS = 1e-6  # isotonic output floor/ceiling: -log(1e-6) = 13.8 at worst per row


def _check_probs(probs: np.ndarray, what: str = "probabilities") -> np.ndarray:
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim != 1:
        raise DataError(f"{what} must be a 1-d array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise DataError(f"{what} must be finite, got NaN or inf (row {_first_bad(values)})")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise DataError(
            f"{what} must lie in [0, 1], got values from {values.min():g} to {values.max():g}"
        )
    return values


def _first_bad(values: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(values))[0])


def _check_fit_data(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (probabilities float64, labels float64 0/1) for fitting a calibrator."""
    values = _check_probs(probs)
    targets = np.asarray(labels, dtype=np.float64)
    if targets.shape != values.shape:
        raise DataError(
            f"labels must have the probabilities' shape {values.shape}, got {targets.shape}"
        )
    if not np.isin(targets, (0.0, 1.0)).all():
        raise DataError("labels must be 0 or 1 (NaN and other values cannot be calibrated to)")
    clicks = int(targets.sum())
    if clicks in (0, targets.size):
        raise DataError(
            f"calibration needs both clicks and non-clicks, got {clicks} clicks in "
            f"{targets.size} rows; use a larger validation split"
        )
    return values, targets


def logit(probs: np.ndarray) -> np.ndarray:
    clipped = np.clip(probs, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(clipped) - np.log1p(-clipped)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


class Calibrator(ABC):
    """Maps click probabilities to calibrated ones: ``fit(probs, labels)``, ``transform``.

    Learned state ends in ``_``; ``transform`` before ``fit`` raises NotFittedError.
    """

    method: ClassVar[str]

    @abstractmethod
    def fit(self, probs: np.ndarray, labels: np.ndarray) -> Self:
        """Fit on probabilities (N,) in [0, 1] and 0/1 labels (N,)."""

    @abstractmethod
    def transform(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N,) float64 for probabilities (N,)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON state: ``{"method": ..., ...}``, read back by :func:`calibrator_from_dict`."""

    @classmethod
    @abstractmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """A fitted calibrator from :meth:`to_dict`'s state (ValueError/KeyError if bad)."""

    def _not_fitted(self) -> NotFittedError:
        return NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")


class PlattCalibrator(Calibrator):
    """Platt scaling: ``p' = sigmoid(a * logit(p) + b)``, ``a`` (slope) and ``b`` (intercept)
    minimising the logloss on the fitting data.

    Args:
        max_iter: Newton steps at most (it converges in under 10 on typical data).
        tol: stop when the gradient's largest entry is below this.

    Example:
        >>> platt = PlattCalibrator().fit(valid_probs, valid_labels)
        >>> platt.slope_, platt.intercept_
        (0.81..., -0.32...)
    """

    method = "platt"

    def __init__(self, max_iter: int = 100, tol: float = 1e-10) -> None:
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, probs: np.ndarray, labels: np.ndarray) -> Self:
        values, targets = _check_fit_data(probs, labels)
        self.slope_, self.intercept_ = _newton_logistic(
            logit(values), targets, self.max_iter, self.tol
        )
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        if not hasattr(self, "slope_"):
            raise self._not_fitted()
        return sigmoid(self.slope_ * logit(_check_probs(probs)) + self.intercept_)

    def to_dict(self) -> dict[str, Any]:
        if not hasattr(self, "slope_"):
            raise self._not_fitted()
        return {"method": self.method, "slope": self.slope_, "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        calibrator = cls()
        calibrator.slope_ = _finite(state["slope"], "slope")
        calibrator.intercept_ = _finite(state["intercept"], "intercept")
        return calibrator


def _newton_logistic(
    x: np.ndarray, y: np.ndarray, max_iter: int, tol: float
) -> tuple[float, float]:
    """``(a, b)`` minimising mean logloss of ``sigmoid(a x + b)``; Newton with backtracking,
    from the identity ``(1, 0)``, so it is deterministic and never increases the loss."""

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(max_iter):
        p = sigmoid(a * x + b)
        residual, weight = p - y, p * (1.0 - p)
        grad = np.array([np.mean(residual * x), np.mean(residual)])
        if np.abs(grad).max() < tol:
            break
        cross = np.mean(weight * x)
        hess = np.array([[np.mean(weight * x * x), cross], [cross, np.mean(weight)]])
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        scale = 1.0
        while scale > 1e-10:  # backtrack until the loss decreases enough (Armijo)
            trial = loss(a - scale * step[0], b - scale * step[1])
            if trial <= current - 1e-4 * scale * float(grad @ step):
                break
            scale /= 2.0
        if scale <= 1e-10:
            break  # no step decreases the loss: at the minimum to float precision
        a, b, current = a - scale * step[0], b - scale * step[1], trial
    return float(a), float(b)


class IsotonicCalibrator(Calibrator):
    """Isotonic regression: the non-decreasing fit of the labels on the probabilities.

    Pool-adjacent-violators gives blocks of consecutive probabilities with one click rate
    each; ``transform`` interpolates linearly between the blocks' centres (mean probability,
    click rate), is flat beyond the first and last centre, and clips to ``[eps, 1 - eps]``.
    Interpolating between centres, rather than using the step function, keeps most rows that
    were ranked apart ranked apart (AUC moves only where the ends are flat).

    Args:
        eps: the output lies in ``[eps, 1 - eps]``.
    """

    method = "isotonic"

    def __init__(self, eps: float = ISOTONIC_EPS) -> None:
        if not 0.0 < eps < 0.5:
            raise ConfigError(f"eps must lie in (0, 0.5), got {eps!r}")
        self.eps = eps

    def fit(self, probs: np.ndarray, labels: np.ndarray) -> Self:
        values, targets = _check_fit_data(probs, labels)
        unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        rates = np.bincount(inverse, weights=targets) / counts  # ties pooled first
        block_values, sizes = pool_adjacent_violators(rates, counts.astype(np.float64))
        block = np.repeat(np.arange(len(sizes)), sizes)  # block of each unique probability
        weights = np.bincount(block, weights=counts)
        self.centres_ = np.bincount(block, weights=unique * counts) / weights
        self.values_ = block_values
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        if not hasattr(self, "centres_"):
            raise self._not_fitted()
        out = np.interp(_check_probs(probs), self.centres_, self.values_)
        return np.clip(out, self.eps, 1.0 - self.eps)

    def to_dict(self) -> dict[str, Any]:
        if not hasattr(self, "centres_"):
            raise self._not_fitted()
        return {
            "method": self.method,
            "eps": self.eps,
            "centres": self.centres_.tolist(),  # JSON floats round-trip exactly
            "values": self.values_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        calibrator = cls(_finite(state["eps"], "eps"))
        centres = np.asarray(state["centres"], dtype=np.float64)
        values = np.asarray(state["values"], dtype=np.float64)
        if centres.ndim != 1 or centres.shape != values.shape or centres.size == 0:
            raise ValueError("centres and values must be non-empty lists of equal length")
        if not (np.isfinite(centres).all() and np.isfinite(values).all()):
            raise ValueError("centres and values must be finite")
        if np.any(np.diff(centres) <= 0) or np.any(np.diff(values) < 0):
            raise ValueError("centres must increase and values must not decrease")
        calibrator.centres_, calibrator.values_ = centres, values
        return calibrator


def pool_adjacent_violators(
    values: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The weighted least-squares non-decreasing fit of ``values`` (in their given order).

    Returns:
        ``(block_values, block_sizes)``: the fit is ``np.repeat(block_values, block_sizes)``;
        block values strictly increase (equal neighbours are pooled).
    """
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        mean, total, size = value, weight, 1
        while means and means[-1] >= mean:  # a violator: pool it with the block before
            total_before = totals.pop()
            mean = (means.pop() * total_before + mean * total) / (total_before + total)
            total += total_before
            size += sizes.pop()
        means.append(mean)
        totals.append(total)
        sizes.append(size)
    return np.array(means, dtype=np.float64), np.array(sizes, dtype=np.int64)


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


CALIBRATORS: dict[str, type[Calibrator]] = {
    PlattCalibrator.method: PlattCalibrator,
    IsotonicCalibrator.method: IsotonicCalibrator,
}


def make_calibrator(method: str) -> Calibrator:
    """An unfitted calibrator by name (``platt`` or ``isotonic``).

    Raises:
        ConfigError: another name.
    """
    if method not in CALIBRATORS:
        raise ConfigError(
            f"calibration method must be one of {sorted(CALIBRATORS)}, got {method!r}"
        )
    return CALIBRATORS[method]()


def calibrator_from_dict(state: Any, where: str = CALIBRATION_FILE) -> Calibrator:
    """A fitted calibrator from its JSON state.

    Raises:
        DataError: not a known method, or a state that does not describe a fitted calibrator.
    """
    method = state.get("method") if isinstance(state, dict) else None
    if not isinstance(method, str) or method not in CALIBRATORS:
        raise DataError(
            f"{where}: calibration method must be one of {sorted(CALIBRATORS)}, got {method!r}"
        )
    try:
        return CALIBRATORS[method].from_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: not a valid {method} calibration ({exc})") from None


class Calibration:
    """One fitted calibrator per task, applied column by column to (N, T) probabilities.

    Args:
        calibrators: the T calibrators, in task order.
        tasks: the T task names.
    """

    def __init__(self, calibrators: Sequence[Calibrator], tasks: Sequence[str]) -> None:
        if len(calibrators) != len(tasks) or not calibrators:
            raise ValueError(f"{len(calibrators)} calibrators for {len(tasks)} tasks")
        self.calibrators = list(calibrators)
        self.tasks = list(tasks)

    @property
    def method(self) -> str:
        return self.calibrators[0].method

    def transform(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated (N, T) float64 probabilities for (N, T) ((N,): one task, (N,) out)."""
        values = np.asarray(probs, dtype=np.float64)
        if values.ndim == 1:
            return self.calibrators[0].transform(values)
        if values.ndim != 2 or values.shape[1] != len(self.calibrators):
            raise DataError(
                f"probabilities must be (N, {len(self.calibrators)}) for tasks {self.tasks}, "
                f"got shape {values.shape}"
            )
        columns = [c.transform(values[:, t]) for t, c in enumerate(self.calibrators)]
        return np.stack(columns, axis=1)

    def to_dict(self) -> dict[str, Any]:
        if len(self.calibrators) == 1:
            return self.calibrators[0].to_dict()
        return {
            "method": self.method,
            "tasks": {
                name: c.to_dict() for name, c in zip(self.tasks, self.calibrators, strict=True)
            },
        }

    @classmethod
    def from_dict(
        cls, state: Any, tasks: Sequence[str], where: str = CALIBRATION_FILE
    ) -> Calibration:
        """A calibration from ``calibration.json``'s state for the run's ``tasks``.

        Raises:
            DataError: a state that does not describe a fitted calibration of these tasks.
        """
        if len(tasks) == 1:
            return cls([calibrator_from_dict(state, where)], tasks)
        per_task = state.get("tasks") if isinstance(state, dict) else None
        if not isinstance(per_task, dict) or sorted(per_task) != sorted(tasks):
            raise DataError(
                f"{where}: a calibration of several tasks must map each task {list(tasks)} to "
                "its calibrator under 'tasks'; run `finalmlp calibrate` again"
            )
        return cls(
            [calibrator_from_dict(per_task[name], f"{where} ({name})") for name in tasks], tasks
        )


def _known(labels: np.ndarray, probs: np.ndarray, task: int) -> tuple[np.ndarray, np.ndarray]:
    """One task's labelled rows: (labels (n,), probabilities (n,))."""
    label_matrix, prob_matrix = as_task_matrix(labels), as_task_matrix(probs, "probs")
    known = ~np.isnan(label_matrix[:, task])
    return label_matrix[known, task], prob_matrix[known, task]


def calibration_effect(
    calibration: Calibration | Calibrator, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Logloss, ECE (15 equal-width bins) and AUC before and after calibration, per split (and
    per task when there are several).

    Args:
        calibration: one calibrator per task (a lone Calibrator: one task).
        splits: split name -> (labels (N, T), raw probabilities (N, T)); (N,) for one task.

    Returns:
        ``{"method": ..., name: {"logloss_before", "logloss_after", "ece_before",
        "ece_after", "auc_before", "auc_after"}}``; several tasks: ``{name: {task: {...}}}``.
    """
    if isinstance(calibration, Calibrator):
        calibration = Calibration([calibration], ["label"])
    effect: dict[str, Any] = {"method": calibration.method}
    for name, (labels, raw) in splits.items():
        per_task = {}
        for t, (task, calibrator) in enumerate(
            zip(calibration.tasks, calibration.calibrators, strict=True)
        ):
            known_labels, known_raw = _known(labels, raw, t)
            calibrated = calibrator.transform(known_raw)
            per_task[task] = {
                "logloss_before": log_loss(known_labels, known_raw),
                "logloss_after": log_loss(known_labels, calibrated),
                "ece_before": expected_calibration_error(known_labels, known_raw),
                "ece_after": expected_calibration_error(known_labels, calibrated),
                "auc_before": roc_auc(known_labels, known_raw),
                "auc_after": roc_auc(known_labels, calibrated),
            }
        effect[name] = next(iter(per_task.values())) if len(per_task) == 1 else per_task
    return effect


def fit_calibration(
    method: str,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    tasks: Sequence[str] = ("label",),
) -> tuple[Calibration, dict[str, Any]]:
    """Fit ``method`` per task on the labelled rows of ``splits["valid"]`` and measure it on
    every split.

    Args:
        splits: split name -> (labels (N, T), raw probabilities (N, T)); (N,) for one task.
        tasks: the T task names.

    Returns:
        The fitted calibration, and :func:`calibration_effect`'s report.
    """
    labels, raw = splits["valid"]
    calibrators = []
    for t, task in enumerate(tasks):
        known_labels, known_raw = _known(labels, raw, t)
        try:
            calibrators.append(make_calibrator(method).fit(known_raw, known_labels))
        except DataError as exc:
            raise DataError(f"task {task!r}: {exc}" if len(tasks) > 1 else str(exc)) from None
    calibration = Calibration(calibrators, tasks)
    return calibration, calibration_effect(calibration, splits)


def describe_effect(effect: Mapping[str, Any]) -> str:
    """One line per split (and task): ``valid logloss 0.1438 -> 0.1402, ECE 0.0123 -> ...``."""
    lines = []
    for name, numbers in effect.items():
        if not isinstance(numbers, Mapping):
            continue
        if "logloss_before" not in numbers:  # several tasks
            lines += [_effect_line(f"{name} {task}", n) for task, n in numbers.items()]
        else:
            lines.append(_effect_line(f"{name:<5}", numbers))
    return "\n".join(lines)


def _effect_line(label: str, numbers: Mapping[str, float]) -> str:
    return (
        f"{label} logloss {numbers['logloss_before']:.4f} -> "
        f"{numbers['logloss_after']:.4f}, ECE {numbers['ece_before']:.4f} -> "
        f"{numbers['ece_after']:.4f}, AUC {numbers['auc_before']:.4f} -> "
        f"{numbers['auc_after']:.4f}"
    )
