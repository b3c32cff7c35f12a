"""The sklearn estimators of the library's metrics, with their settings chosen
deliberately (google-research/disentanglement_lib).

disentanglement_lib calls `LogisticRegression()` and `LinearSVC(...)` with
defaults that changed after it was written:

- `LogisticRegression()` was liblinear one-vs-rest (sklearn < 0.22) and is
  lbfgs multinomial since. DisDiff and EncDiff published with sklearn >= 1.0,
  i.e. lbfgs, so `"lbfgs"` is our default. `"liblinear"` reproduces the old
  behaviour with a one-vs-rest wrapper (sklearn >= 1.8 refuses multi-class
  liblinear); the old fit drew one integer seed from the RandomState it was
  given, and so do we, so later draws line up with the old library.
- `LinearSVC()` had `dual=True` until sklearn 1.3 and `dual="auto"` since
  (primal for SAP's 1-feature problems). We pass the setting explicitly;
  default True, the library's era.
- DCI's `GradientBoostingClassifier()`: all defaults, as in the library, except
  `random_state=0` (the library left it to NumPy's global RNG, which only
  breaks ties between equally good splits) so that our numbers repeat.

Every estimator's ConvergenceWarning is silenced: the library would print the
same warnings on entangled codes and report the numbers anyway.
"""

import contextlib
import warnings

import numpy as np

from cldis_jax import errors

LOGISTIC_SOLVERS = ("lbfgs", "liblinear")


@contextlib.contextmanager
def quiet():
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    yield


def logistic_regression(solver: str = "lbfgs", random_state=None):
  """`LogisticRegression()` of the given era. With a RandomState and
  "liblinear", one integer is drawn from it (as the old liblinear fit did)."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.multiclass import OneVsRestClassifier  # pylint: disable=g-import-not-at-top
  if solver == "lbfgs":
    return LogisticRegression(random_state=random_state)
  if solver == "liblinear":
    seed = (random_state.randint(np.iinfo("i").max)
            if isinstance(random_state, np.random.RandomState) else random_state)
    return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=seed))
  raise errors.ConfigError(f"logistic solver {solver!r} is not one of {LOGISTIC_SOLVERS}")


def linear_svc(dual=True):
  from sklearn.svm import LinearSVC  # pylint: disable=g-import-not-at-top
  return LinearSVC(C=0.01, class_weight="balanced", dual=dual, random_state=0)


def gradient_boosting():
  from sklearn.ensemble import GradientBoostingClassifier  # pylint: disable=g-import-not-at-top
  return GradientBoostingClassifier(random_state=0)
