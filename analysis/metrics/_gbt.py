"""Gradient boosting for DCI: scikit-learn's ``GradientBoostingClassifier()`` algorithm, faster.

disentanglement_lib's DCI fits ``GradientBoostingClassifier()`` (100 stages, learning rate
0.1, depth-3 regression trees on the log-loss gradient, one tree per class and stage, Newton
leaf values) per factor and reads the impurity-based ``feature_importances_``. That is about
90% of the suite's time: scikit-learn re-sorts every node's samples for every feature and has
a fixed cost per tree. This module runs the same algorithm with the features sorted once, all
trees of a stage grown level by level together with numpy, and the same split rules:

* X is cast to float32 (scikit-learn's tree dtype); a split may fall between two sorted values
  only if they differ by more than 1e-7; the threshold is their midpoint (the lower value if
  the midpoint rounds up to the upper); ``x <= threshold`` goes left.
* best split = the largest S_L^2/n_L + S_R^2/n_R (squared-error proxy); within a feature the
  lowest position wins ties; between features a random order (seeded) decides, as the
  scikit-learn splitter's random feature order does.
* a node is a leaf at depth 3, with fewer than 2 samples, or with impurity <= float64 eps.
* leaf value = (K-1)/K * mean(gradient) / mean(p (1 - p)) (binary: without (K-1)/K), 0 if the
  denominator is below 1e-150; the initial raw score is the log prior (symmetric for K > 2).
* importances: per tree, the impurity decrease weighted by node size, summed per feature and
  divided by N; averaged over trees that split at all; normalised to sum 1.

Differences from scikit-learn are floating-point rounding in sums (and hence, rarely, which
of two near-equal splits wins) and the tie order between features, which scikit-learn draws
from numpy's global RNG in dlib's setting. ``tests/test_metrics_gbt.py`` checks agreement.
"""

from __future__ import annotations

import numpy as np

from analysis.errors import AnalysisError

_EPS = float(np.finfo(np.float64).eps)
_FEATURE_THRESHOLD = 1e-7
#: Relative tolerance under which two candidate splits count as tied.
_TIE = 1e-10


class ExactGradientBoosting:
    """Multi-class / binary log-loss gradient boosting with depth-limited exact trees.

    Args:
        n_estimators: boosting stages.
        learning_rate: shrinkage.
        max_depth: tree depth.
        seed: seeds the feature tie order.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 3,
        seed: int = 0,
    ) -> None:
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.max_depth = int(max_depth)
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def fit(self, x: np.ndarray, y: np.ndarray) -> ExactGradientBoosting:
        """Fit on x (N, D) numbers and y (N,) class labels (at least two classes)."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        classes, yk = np.unique(np.asarray(y), return_inverse=True)
        yk = yk.ravel()
        if classes.size < 2:
            raise AnalysisError("gradient boosting needs at least two classes in y.")
        n, d = x32.shape
        k = classes.size
        self.classes_ = classes
        self.n_features_in_ = d
        rng = np.random.RandomState(self.seed)
        onehot = (yk[None, :] == np.arange(k)[:, None]).astype(np.float64)  # (K, N)
        prior = np.clip(onehot.mean(axis=1), _EPS, 1 - _EPS)
        if k == 2:
            init = np.array([np.log(prior[1] / (1 - prior[1]))])
            targets = onehot[1:2]  # (1, N)
        else:
            logp = np.log(prior)
            init = logp - logp.mean()
            targets = onehot
        self._init = init
        t = targets.shape[0]
        raw = np.repeat(init[:, None], n, axis=1)  # (T, N)

        order = np.argsort(x32, axis=0, kind="stable").T  # (D, N)
        xs = np.take_along_axis(x32.T, order, axis=1).astype(np.float64)  # (D, N) sorted
        # Distinct-value ids along each sorted feature (values within 1e-7 of the previous
        # one are not split apart, as in scikit-learn).
        gid = np.zeros((d, n), dtype=np.int32)
        np.cumsum(xs[:, 1:] > xs[:, :-1] + _FEATURE_THRESHOLD, axis=1, out=gid[:, 1:])
        num_nodes = 2 ** (self.max_depth + 1) - 1
        self._feature = np.full((self.n_estimators, t, num_nodes), -1, dtype=np.int64)
        self._threshold = np.zeros((self.n_estimators, t, num_nodes))
        self._value = np.zeros((self.n_estimators, t, num_nodes))
        gains = np.zeros((self.n_estimators, t, d))
        for stage in range(self.n_estimators):
            if k == 2:
                p = 1.0 / (1.0 + np.exp(-raw))
            else:
                z = raw - raw.max(axis=0, keepdims=True)
                e = np.exp(z)
                p = e / e.sum(axis=0, keepdims=True)
            grad = targets - p  # negative gradient, (T, N)
            node = self._grow(stage, grad, x32, order, gid, gains, rng)
            # Newton leaf values.
            flat = (np.arange(t)[:, None] * num_nodes + node).ravel()
            size = t * num_nodes
            cnt = np.bincount(flat, minlength=size)
            num = np.bincount(flat, weights=grad.ravel(), minlength=size)
            hess = p * (1.0 - p)
            den = np.bincount(flat, weights=hess.ravel(), minlength=size)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean_num = num / np.maximum(cnt, 1)
                mean_den = den / np.maximum(cnt, 1)
                if k > 2:
                    mean_num = mean_num * ((k - 1) / k)
                value = np.where(np.abs(mean_den) < 1e-150, 0.0, mean_num / mean_den)
            value = value.reshape(t, num_nodes)
            leaf = self._feature[stage] < 0
            self._value[stage] = np.where(leaf, value, 0.0)
            raw += self.learning_rate * np.take_along_axis(self._value[stage], node, axis=1)
        # Importances: mean over trees that split at all, normalised.
        split_any = (self._feature >= 0).any(axis=2).ravel()
        per_tree = gains.reshape(-1, d)[split_any] / n
        if per_tree.shape[0] == 0:
            self.feature_importances_ = np.zeros(d)
        else:
            avg = per_tree.mean(axis=0)
            total = avg.sum()
            self.feature_importances_ = avg / total if total > 0 else np.zeros(d)
        return self

    def _grow(
        self,
        stage: int,
        grad: np.ndarray,
        x32: np.ndarray,
        order: np.ndarray,
        gid: np.ndarray,
        gains: np.ndarray,
        rng: np.random.RandomState,
    ) -> np.ndarray:
        """Grow the T trees of one stage on the gradients (T, N); returns each sample's leaf.

        ``order`` (D, N) sorts each feature; ``gid`` (D, N) numbers the distinct values (after
        the 1e-7 merge) along that order, so a split between consecutive members of a node is
        allowed where their ``gid`` differ.
        """
        t, n = grad.shape
        d = order.shape[0]
        node = np.zeros((t, n), dtype=np.int64)
        g_sorted = grad[:, order]  # (T, D, N)
        feature = self._feature[stage]
        threshold = self._threshold[stage]
        pos = np.arange(n)
        trees = np.arange(t)
        row_base = (np.arange(t * d) * n).reshape(t, d, 1)  # flat offset of row (tree, feature)
        gid_base = (np.arange(d) * n).reshape(1, d, 1)
        gid_flat = gid.ravel()
        ties = bool((gid[:, -1] < n - 1).any())  # some feature has repeated values
        for level in range(self.max_depth):
            first = 2**level - 1
            m = 2**level  # nodes at this level; local id m = "already a leaf"
            local = node - first
            local = np.where((local >= 0) & (local < m), local, m)  # (T, N)
            flat = (trees[:, None] * (m + 1) + local).ravel()
            size = t * (m + 1)
            cnt = np.bincount(flat, minlength=size).reshape(t, m + 1)
            s_tot = np.bincount(flat, weights=grad.ravel(), minlength=size).reshape(t, m + 1)
            sq_tot = np.bincount(flat, weights=(grad * grad).ravel(), minlength=size)
            sq_tot = sq_tot.reshape(t, m + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                impurity = sq_tot / cnt - (s_tot / cnt) ** 2
            can_split = (cnt >= 2) & (impurity > _EPS)
            can_split[:, m] = False
            if not can_split.any():
                break
            starts = np.zeros((t, m + 1), dtype=np.int64)
            np.cumsum(cnt[:, :-1], axis=1, out=starts[:, 1:])
            seg = np.sort(local, axis=1)  # (T, N): node of each grouped position
            if m > 1:
                # Group each feature's sorted order by node, keeping the order within a node.
                key = local.astype(np.uint8)[:, order]  # (T, D, N)
                perm = np.argsort(key, axis=2, kind="stable")
                g = g_sorted.ravel().take((perm + row_base).ravel()).reshape(t, d, n)
                gi = gid_flat.take((perm + gid_base).ravel()).reshape(t, d, n) if ties else None
                cs = np.cumsum(g, axis=2)
                before = np.cumsum(s_tot, axis=1) - s_tot  # (T, M+1): sums of earlier nodes
                cs -= np.take_along_axis(before, seg, axis=1)[:, None, :]
            else:
                perm = None
                cs = np.cumsum(g_sorted, axis=2)
                gi = None
            start_of = np.take_along_axis(starts, seg, axis=1)  # (T, N)
            n_left = (pos[None, :] - start_of + 1).astype(np.float64)  # (T, N)
            n_right = np.take_along_axis(cnt, seg, axis=1) - n_left
            s_node = np.take_along_axis(s_tot, seg, axis=1)  # (T, N)
            ok = (n_right > 0) & np.take_along_axis(can_split, seg, axis=1)  # (T, N)
            with np.errstate(divide="ignore", invalid="ignore"):
                inv_left = 1.0 / n_left
                inv_right = np.where(ok, 1.0 / n_right, 0.0)
                proxy = cs * cs
                proxy *= inv_left[:, None, :]
                s_right = s_node[:, None, :] - cs
                s_right *= s_right
                s_right *= inv_right[:, None, :]
                proxy += s_right
            if ties:
                valid = np.zeros((t, d, n), dtype=bool)
                if gi is None:  # level 0: the feature order itself
                    valid[:, :, :-1] = (gid[:, 1:] > gid[:, :-1])[None]
                else:
                    np.greater(gi[:, :, 1:], gi[:, :, :-1], out=valid[:, :, :-1])
                valid &= ok[:, None, :]
            else:  # all values distinct: every position inside a node is a split point
                valid = np.broadcast_to(ok[:, None, :], (t, d, n))
            np.copyto(proxy, -np.inf, where=~valid)
            # Best value per (tree, feature, node): segmented max over the flat array.
            nonempty = np.broadcast_to((cnt > 0)[:, None, :], (t, d, m + 1))
            seg_idx = (row_base + starts[:, None, :])[nonempty]  # increasing
            pflat = proxy.reshape(-1)
            best_val = np.full((t, d, m + 1), -np.inf)
            best_val[nonempty] = np.maximum.reduceat(pflat, seg_idx)
            best_val = best_val[:, :, :m]
            # Best feature per (tree, node); near-ties (equal up to rounding) go to a random
            # feature order, as in scikit-learn, whose summation order decides them.
            rank = np.argsort(rng.rand(t, m, d), axis=2)  # (T, M, D) priority of each feature
            top = best_val.max(axis=1)  # (T, M)
            tied = best_val >= top[:, None, :] - _TIE * np.abs(top[:, None, :])
            prio = np.where(tied.transpose(0, 2, 1), rank, d + 1)  # (T, M, D)
            best_f = np.argmin(prio, axis=2)  # (T, M)
            split = np.isfinite(top) & can_split[:, :m]
            for tt, j in zip(*np.nonzero(split), strict=True):
                f = int(best_f[tt, j])
                a0, length = int(starts[tt, j]), int(cnt[tt, j])
                # First position of the maximum inside the node (scikit-learn scans upwards
                # and keeps the first strictly better split).
                i = a0 + int(np.argmax(proxy[tt, f, a0 : a0 + length] >= best_val[tt, f, j]))
                # Sample ids at grouped positions i and i+1 of (tree tt, feature f).
                if perm is not None:
                    a, b = order[f, perm[tt, f, i]], order[f, perm[tt, f, i + 1]]
                else:
                    a, b = order[f, i], order[f, i + 1]
                lo32, hi32 = x32[a, f], x32[b, f]
                thr = float(lo32) / 2.0 + float(hi32) / 2.0
                if thr == float(hi32) or not np.isfinite(thr):
                    thr = float(lo32)
                h = first + j
                feature[tt, h] = f
                threshold[tt, h] = thr
                sn, cn = s_tot[tt, j], cnt[tt, j]
                gains[stage, tt, f] += best_val[tt, f, j] - sn * sn / cn
            # Route the samples of split nodes.
            f_s = feature[trees[:, None], node]  # (T, N)
            thr_s = threshold[trees[:, None], node]
            moving = (f_s >= 0) & (local < m)
            xv = x32[pos[None, :], np.maximum(f_s, 0)].astype(np.float64)
            child = np.where(xv <= thr_s, 2 * node + 1, 2 * node + 2)
            node = np.where(moving, child, node)
        return node

    # --------------------------------------------------------------- prediction
    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (N, T) of x (N, D)."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        n = x32.shape[0]
        s, t, _ = self._feature.shape
        raw = np.repeat(self._init[None, :], n, axis=0).astype(np.float64)  # (N, T)
        pos = np.arange(n)
        chunk = max(1, 2_000_000 // max(n * t, 1))
        for a in range(0, s, chunk):
            feat = self._feature[a : a + chunk].reshape(-1, self._feature.shape[2])  # (S'T, nodes)
            thr = self._threshold[a : a + chunk].reshape(feat.shape)
            val = self._value[a : a + chunk].reshape(feat.shape)
            rows = np.arange(feat.shape[0])[:, None]
            node = np.zeros((feat.shape[0], n), dtype=np.int64)
            for _ in range(self.max_depth):
                f = feat[rows, node]
                inner = f >= 0
                xv = x32[pos[None, :], np.maximum(f, 0)].astype(np.float64)
                child = np.where(xv <= thr[rows, node], 2 * node + 1, 2 * node + 2)
                node = np.where(inner, child, node)
            contrib = val[rows, node].reshape(-1, t, n)  # (S', T, N)
            for stage_contrib in contrib:  # stage by stage, as scikit-learn adds them
                raw += self.learning_rate * stage_contrib.T
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels (N,)."""
        raw = self.decision_function(x)
        if raw.shape[1] == 1:
            return self.classes_[(raw[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(raw, axis=1)]

