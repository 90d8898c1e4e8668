"""Write pickles of fitted estimators with jaxkde 0.1.0 before the layout pass (test data)."""

import pickle
import sys

import numpy as np

import jaxkde
from jaxkde import KDE, KDEClassifier

rng = np.random.default_rng(0)
X = rng.normal(size=(200, 3)).astype(np.float32)
y = (X[:, 0] > 0).astype(int)
Q = rng.normal(size=(17, 3)).astype(np.float32)
Xb = np.abs(X[:, :2])
Qb = np.abs(Q[:, :2])
models = {
    "plain": (KDE(bandwidth="scott").fit(X), Q),
    "labelled": (KDE(bandwidth="silverman").fit(X, y), Q),
    "bounded": (KDE(bounds=[(0.0, None), (0.0, None)]).fit(Xb), Qb),
    "adaptive": (KDE(adaptive=True, alpha=0.5, kernel="epanechnikov").fit(X), Q),
    "learned": (KDE(bandwidth="lscv").fit(X[:, :1]), Q[:, :1]),
    "classifier": (KDEClassifier().fit(X, y), Q),
}
out = {}
for name, (m, q) in models.items():
    score = m.predict_log_proba(q) if name == "classifier" else m.score_samples(q)
    out[name] = {"model": m, "query": q, "score": np.asarray(score)}
out["__all__"] = sorted(jaxkde.__all__)
out["__version__"] = jaxkde.__version__
with open(sys.argv[1], "wb") as f:
    pickle.dump(out, f, protocol=4)
