"""Gradient boosting for DCI: scikit-learn's ``GradientBoostingClassifier()`` algorithm, faster.

disentanglement_lib's DCI fits ``GradientBoostingClassifier()`` (100 stages, learning rate
0.1, depth-3 regression trees on the log-loss gradient, one tree per class and stage, Newton
leaf values) per factor and reads the impurity-based ``feature_importances_``. That is about
90% of the suite's time: scikit-learn re-sorts every node's samples for every feature and has
a fixed cost per tree. This module runs the same algorithm with the features sorted once, all
trees of a stage grown level by level together with numpy, and the same split rules. Each
level searches a feature's splits one of two ways that find the same splits:

* sorted scan: each node's samples grouped along the feature's sorted order, the left sums
  of every split from one cumulative sum (any feature);
* histogram: per-node sums over the feature's distinct values (one bin per value), cumulated
  over the bins; used for features with at most ``MAX_BINS`` distinct values (N // 6 by
  default, the measured break-even), each more than 1e-7 above the previous one, so that
  the bins' boundaries are exactly the sorted scan's candidate splits. Discrete-valued codes
  (a factor's few values) take this path.

The split rules:

* X is cast to float32 (scikit-learn's tree dtype); a split may fall between two sorted values
  only if they differ by more than 1e-7; the threshold is their midpoint (the lower value if
  the midpoint rounds up to the upper); ``x <= threshold`` goes left.
* best split = the largest S_L^2/n_L + S_R^2/n_R (squared-error proxy); within a feature the
  lowest split within 1e-10 (relative) of the maximum wins, which is scikit-learn's first
  strictly better split in exact arithmetic (e.g. all splits of a node whose gradients are
  equal tie); between features, near-ties go to a random order (seeded), as the
  scikit-learn splitter's random feature order does.
* a node is a leaf at depth 3, with fewer than 2 samples, or with impurity <= float64 eps.
* leaf value = (K-1)/K * mean(gradient) / mean(p (1 - p)) (binary: without (K-1)/K), 0 if the
  denominator is below 1e-150; the initial raw score is the log prior (symmetric for K > 2).
* importances: per tree, the impurity decrease weighted by node size, summed per feature and
  divided by N; averaged over trees that split at all; normalised to sum 1.

Differences from scikit-learn are floating-point rounding in sums (and hence, rarely, which
of two near-equal splits wins) and the tie order between features, which scikit-learn draws
from numpy's global RNG in dlib's setting. ``tests/test_metrics_gbt.py`` checks agreement
with scikit-learn and that both split searches grow the same trees.
"""

from __future__ import annotations

import numpy as np

from analysis.errors import AnalysisError

_EPS = float(np.finfo(np.float64).eps)
_FEATURE_THRESHOLD = 1e-7
#: Relative tolerance under which two candidate splits count as tied.
_TIE = 1e-10
#: Features with at most this many distinct values use the histogram split search; None:
#: N // 6 for N training samples (measured at N = 10,000, 10 classes: the histogram search
#: takes 0.45x the sorted one's CPU time at 256 values, 0.75x at 1,024, 1.1x at 2,048).
MAX_BINS: int | None = None


class _SplitPlan:
    """How each feature's splits are searched: sorted order, or a histogram of its values.

    Both searches consider the same candidate splits, between consecutive distinct values
    (values within 1e-7 of the previous sorted one are not split apart, as in scikit-learn).
    A feature goes to the histogram search when it has at most ``max_bins`` distinct float32
    values, each more than 1e-7 above the previous one, so that each bin is one value.

    Args:
        x32: (N, D) float32 features.
        max_bins: the most distinct values of a histogram-searched feature (0: none).
    """

    def __init__(self, x32: np.ndarray, max_bins: int) -> None:
        n, d = x32.shape
        order = np.argsort(x32, axis=0, kind="stable").T  # (D, N)
        xs = np.take_along_axis(x32.T, order, axis=1).astype(np.float64)  # (D, N) sorted
        gid = np.zeros((d, n), dtype=np.int32)
        np.cumsum(xs[:, 1:] > xs[:, :-1] + _FEATURE_THRESHOLD, axis=1, out=gid[:, 1:])
        groups = gid[:, -1].astype(np.int64) + 1
        distinct = 1 + np.count_nonzero(xs[:, 1:] != xs[:, :-1], axis=1)
        use_hist = (groups == distinct) & (groups <= max_bins)
        # Sorted search: features with repeated values first (their ``num_tied`` rows need a
        # check that a split does not fall between equal values).
        tied = gid[:, -1] < n - 1
        self.sorted_features = np.r_[np.flatnonzero(~use_hist & tied),
                                     np.flatnonzero(~use_hist & ~tied)]
        self.num_tied = int((~use_hist & tied).sum())
        self.sorted_slot = np.full(d, -1, dtype=np.int64)
        self.sorted_slot[self.sorted_features] = np.arange(self.sorted_features.size)
        self.order = np.ascontiguousarray(order[self.sorted_features])
        self.gid = np.ascontiguousarray(gid[self.sorted_features[: self.num_tied]])
        # Histogram search: features grouped by their padded width (the next power of two of
        # their number of values), each group padded to its largest member.
        hist = np.flatnonzero(use_hist)
        pad = 2 ** np.ceil(np.log2(np.maximum(groups[hist], 2))).astype(np.int64)
        by_pad = np.argsort(pad, kind="stable")
        hist, pad = hist[by_pad], pad[by_pad]
        self.hist_features = hist
        self.hist_slot = np.full(d, -1, dtype=np.int64)
        self.hist_slot[hist] = np.arange(hist.size)
        #: (first slot, end slot, width, offset in a node's block) per group.
        self.groups: list[tuple[int, int, int, int]] = []
        self.group_of = np.zeros(hist.size, dtype=np.int64)
        bins = np.zeros((n, hist.size), dtype=np.int64)
        self.values: list[np.ndarray] = []
        offset = slot = 0
        while slot < hist.size:
            end = int(np.searchsorted(pad, pad[slot], side="right"))
            width = int(groups[hist[slot:end]].max())
            for k in range(slot, end):
                f = hist[k]
                bins[order[f], k] = offset + (k - slot) * width + gid[f]
                starts = np.flatnonzero(np.r_[True, gid[f, 1:] != gid[f, :-1]])
                self.values.append(x32[order[f, starts], f])
                self.group_of[k] = len(self.groups)
            self.groups.append((slot, end, width, offset))
            offset += (end - slot) * width
            slot = end
        self.bins = bins  # (N, Dh): each sample's bin, as an offset in a node's block
        self.width = offset  # bins per node block


class _SortedSearch:
    """Best split per (tree, feature, node) by a scan of each feature's sorted order.

    The samples of each node are grouped (stably) along each feature's sorted order, so a
    cumulative sum gives the left sums of every candidate split at once. The (T, Ds, N) work
    arrays are allocated once per fit and reused by every stage and level.

    Args:
        plan: the split plan; t, n: trees per stage and samples.
    """

    def __init__(self, plan: _SplitPlan, t: int, n: int) -> None:
        d = plan.order.shape[0]
        self.plan = plan
        self.g_sorted = np.empty((t, d, n))  # each stage's gradients along each feature's order
        self.proxy = np.empty((t, d, n))  # left sums, then the split proxies
        self.right = np.empty((t, d, n))
        self.index = np.empty((t, d, n), dtype=np.int64)
        self.key = np.empty((t, d, n), dtype=np.uint8)
        dt = plan.num_tied
        self.valid = np.empty((t, dt, n), dtype=bool)
        self.gi = np.empty((t, dt, n), dtype=plan.gid.dtype)
        self.gi_index = np.empty((t, dt, n), dtype=np.int64)
        self.row_base = (np.arange(t * d) * n).reshape(t, d, 1)  # flat offset of (tree, feature)
        self.gid_base = (np.arange(dt) * n).reshape(1, dt, 1)
        self.pos = np.arange(n)
        self.perm: np.ndarray | None = None

    def start(self, grad: np.ndarray) -> None:
        """Take a stage's gradients (T, N)."""
        np.take(grad, self.plan.order, axis=1, out=self.g_sorted)

    def level(
        self,
        local: np.ndarray,
        m: int,
        cnt: np.ndarray,
        s_tot: np.ndarray,
        can_split: np.ndarray,
    ) -> np.ndarray:
        """Best proxy (T, Ds, M) of the M nodes whose samples carry ``local`` ids (T, N)."""
        plan, g_sorted, row_base = self.plan, self.g_sorted, self.row_base
        order, gid = plan.order, plan.gid
        t, d, n = g_sorted.shape
        cs, index = self.proxy, self.index
        starts = np.zeros((t, m + 1), dtype=np.int64)
        np.cumsum(cnt[:, :-1], axis=1, out=starts[:, 1:])
        seg = np.sort(local, axis=1)  # (T, N): node of each grouped position
        gi = None
        dt = plan.num_tied
        if m > 1:
            # Group each feature's sorted order by node, keeping the order within a node.
            np.take(local.astype(np.uint8), order, axis=1, out=self.key)  # (T, D, N)
            perm = np.argsort(self.key, axis=2, kind="stable")
            np.add(perm, row_base, out=index)
            np.take(g_sorted.reshape(-1), index, out=cs)
            if dt:
                np.add(perm[:, :dt], self.gid_base, out=self.gi_index)
                gi = np.take(gid.reshape(-1), self.gi_index, out=self.gi)
            np.cumsum(cs, axis=2, out=cs)
            before = np.cumsum(s_tot, axis=1) - s_tot  # (T, M+1): sums of earlier nodes
            cs -= np.take_along_axis(before, seg, axis=1)[:, None, :]
            self.perm = perm
        else:
            self.perm = None
            np.cumsum(g_sorted, axis=2, out=cs)
        start_of = np.take_along_axis(starts, seg, axis=1)  # (T, N)
        n_left = (self.pos[None, :] - start_of + 1).astype(np.float64)  # (T, N)
        n_right = np.take_along_axis(cnt, seg, axis=1) - n_left
        s_node = np.take_along_axis(s_tot, seg, axis=1)  # (T, N)
        ok = (n_right > 0) & np.take_along_axis(can_split, seg, axis=1)  # (T, N)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_left = 1.0 / n_left
            inv_right = np.where(ok, 1.0 / n_right, 0.0)
            s_right = np.subtract(s_node[:, None, :], cs, out=self.right)
            proxy = np.multiply(cs, cs, out=cs)
            proxy *= inv_left[:, None, :]
            s_right *= s_right
            s_right *= inv_right[:, None, :]
            proxy += s_right
        if dt:  # features with repeated values: no split between equal values
            valid = self.valid
            valid[:, :, -1] = False
            if gi is None:  # level 0: the feature order itself
                valid[:, :, :-1] = (gid[:, 1:] > gid[:, :-1])[None]
            else:
                np.greater(gi[:, :, 1:], gi[:, :, :-1], out=valid[:, :, :-1])
            valid &= ok[:, None, :]
            np.copyto(proxy[:, :dt], -np.inf, where=~valid)
        # All values distinct: every position inside a node is a split point.
        np.copyto(proxy[:, dt:], -np.inf, where=~ok[:, None, :])
        # Best value per (tree, feature, node): segmented max over the flat array.
        nonempty = np.broadcast_to((cnt > 0)[:, None, :], (t, d, m + 1))
        seg_idx = (row_base + starts[:, None, :])[nonempty]  # increasing
        best_val = np.full((t, d, m + 1), -np.inf)
        best_val[nonempty] = np.maximum.reduceat(proxy.reshape(-1), seg_idx)
        self.starts, self.cnt = starts, cnt
        return best_val[:, :, :m]

    def split_at(self, tt: int, j: int, fs: int, best: float) -> tuple[int, int, float]:
        """The best split of tree tt's node j on sorted feature fs: the sample ids on either
        side and its proxy.

        The lowest split within rounding (``_TIE``) of the maximum wins: scikit-learn scans
        upwards and keeps the first strictly better split, which in exact arithmetic is the
        first maximum (splits of a node whose gradients are all equal tie).
        """
        a0, length = int(self.starts[tt, j]), int(self.cnt[tt, j])
        row = self.proxy[tt, fs, a0 : a0 + length]
        i = a0 + int(np.argmax(row >= best - _TIE * abs(best)))
        order = self.plan.order
        value = float(self.proxy[tt, fs, i])
        if self.perm is not None:
            perm = self.perm[tt, fs]
            return int(order[fs, perm[i]]), int(order[fs, perm[i + 1]]), value
        return int(order[fs, i]), int(order[fs, i + 1]), value


class _HistSearch:
    """Best split per (tree, feature, node) from per-value gradient sums (histogram features).

    Args:
        grad: (T, N) gradients; plan: the split plan; local: (T, N) node of each sample
        (``m`` = in no node of this level); cnt, s_tot: (T, M+1) node sizes and sums;
        can_split: (T, M+1) splittable nodes.

    Attributes:
        best: (T, Dh, M) best proxy of each histogram feature and node (-inf: none).
    """

    def __init__(
        self,
        grad: np.ndarray,
        plan: _SplitPlan,
        local: np.ndarray,
        m: int,
        cnt: np.ndarray,
        s_tot: np.ndarray,
        can_split: np.ndarray,
    ) -> None:
        t, n = grad.shape
        dh = plan.hist_features.size
        w = plan.width
        self.plan = plan
        base = (np.arange(t)[:, None] * (m + 1) + local) * w  # (T, N)
        idx = (base[:, :, None] + plan.bins[None]).ravel()  # (T, N, Dh)
        size = t * (m + 1) * w
        hs = np.bincount(idx, weights=np.repeat(grad.ravel(), dh), minlength=size)
        hc = np.bincount(idx, minlength=size)
        hs = hs.reshape(t, m + 1, w)[:, :m]
        hc = hc.reshape(t, m + 1, w)[:, :m]
        n_node = cnt[:, :m, None, None].astype(np.float64)
        s_node = s_tot[:, :m, None, None]
        splittable = can_split[:, :m, None, None]
        self.best = np.full((t, dh, m), -np.inf)
        self.arg: list[np.ndarray] = []
        self.chosen: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        for first, end, width, offset in plan.groups:
            k = end - first
            block = slice(offset, offset + k * width)
            c_sum = hs[:, :, block].reshape(t, m, k, width)
            c_cnt = hc[:, :, block].reshape(t, m, k, width)
            cs = np.cumsum(c_sum, axis=3)
            n_left = np.cumsum(c_cnt, axis=3).astype(np.float64)
            n_right = n_node - n_left
            valid = (c_cnt > 0) & (n_right > 0) & splittable
            with np.errstate(divide="ignore", invalid="ignore"):
                inv_left = 1.0 / n_left
                inv_right = np.where(valid, 1.0 / n_right, 0.0)
                proxy = cs * cs
                proxy *= inv_left
                s_right = s_node - cs
                s_right *= s_right
                s_right *= inv_right
                proxy += s_right
            np.copyto(proxy, -np.inf, where=~valid)
            top = proxy.max(axis=3, keepdims=True)  # (T, M, k, 1)
            with np.errstate(invalid="ignore"):
                arg = np.argmax(proxy >= top - _TIE * np.abs(top), axis=3)  # as split_at
            self.best[:, first:end] = top[..., 0].transpose(0, 2, 1)
            self.chosen.append(np.take_along_axis(proxy, arg[..., None], axis=3)[..., 0])
            self.arg.append(arg)
            self.counts.append(c_cnt)

    def split_at(self, tt: int, j: int, f: int) -> tuple[np.float32, np.float32, float]:
        """The best split of tree tt's node j on histogram feature f: the feature values on
        either side and its proxy (the lowest split within ``_TIE`` of the maximum)."""
        slot = int(self.plan.hist_slot[f])
        g = int(self.plan.group_of[slot])
        k = slot - self.plan.groups[g][0]
        b = int(self.arg[g][tt, j, k])
        counts = self.counts[g][tt, j, k]
        nxt = b + 1 + int(np.argmax(counts[b + 1 :] > 0))
        values = self.plan.values[slot]
        return values[b], values[nxt], float(self.chosen[g][tt, j, k])


class ExactGradientBoosting:
    """Multi-class / binary log-loss gradient boosting with depth-limited exact trees.

    Args:
        n_estimators: boosting stages.
        learning_rate: shrinkage.
        max_depth: tree depth.
        seed: seeds the feature tie order.
        max_bins: features with at most this many distinct values (more than 1e-7 apart)
            search their splits over a histogram of those values, the others over their
            sorted order; both find the same splits. 0: the sorted search for every feature;
            None: the module's ``MAX_BINS`` (default N // 6, the break-even).
    """

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 3,
        seed: int = 0,
        max_bins: int | None = None,
    ) -> None:
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.max_depth = int(max_depth)
        self.seed = seed
        self.max_bins = max_bins

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

        limit = MAX_BINS if self.max_bins is None else self.max_bins
        plan = _SplitPlan(x32, n // 6 if limit is None else int(limit))
        self.hist_features_ = plan.hist_features.copy()
        sorted_search = _SortedSearch(plan, t, n) if plan.sorted_features.size else None
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
            node = self._grow(stage, grad, x32, plan, sorted_search, gains, rng)
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
        # The training samples' raw scores, summed stage by stage as decision_function does.
        self.train_decision_ = raw.T
        return self

    def _grow(
        self,
        stage: int,
        grad: np.ndarray,
        x32: np.ndarray,
        plan: _SplitPlan,
        sorted_search: _SortedSearch | None,
        gains: np.ndarray,
        rng: np.random.RandomState,
    ) -> np.ndarray:
        """Grow the T trees of one stage on the gradients (T, N); returns each sample's leaf."""
        t, n = grad.shape
        d = x32.shape[1]
        node = np.zeros((t, n), dtype=np.int64)
        feature = self._feature[stage]
        threshold = self._threshold[stage]
        pos = np.arange(n)
        trees = np.arange(t)
        if sorted_search is not None:
            sorted_search.start(grad)
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
            best_val = np.full((t, d, m), -np.inf)
            if sorted_search is not None:
                best_val[:, plan.sorted_features] = sorted_search.level(
                    local, m, cnt, s_tot, can_split
                )
            hist = None
            if plan.hist_features.size:
                hist = _HistSearch(grad, plan, local, m, cnt, s_tot, can_split)
                best_val[:, plan.hist_features] = hist.best
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
                if hist is not None and plan.hist_slot[f] >= 0:
                    lo32, hi32, value = hist.split_at(int(tt), int(j), f)
                elif sorted_search is not None:
                    a, b, value = sorted_search.split_at(
                        int(tt), int(j), int(plan.sorted_slot[f]), best_val[tt, f, j]
                    )
                    lo32, hi32 = x32[a, f], x32[b, f]
                thr = float(lo32) / 2.0 + float(hi32) / 2.0
                if thr == float(hi32) or not np.isfinite(thr):
                    thr = float(lo32)
                h = first + j
                feature[tt, h] = f
                threshold[tt, h] = thr
                sn, cn = s_tot[tt, j], cnt[tt, j]
                gains[stage, tt, f] += value - sn * sn / cn
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
        """Raw scores (N, T) of x (N, D).

        A leaf above full depth hands its value down to virtual descendants, so every sample
        descends ``max_depth`` levels; all comparisons of a tree's inner nodes are made at
        once, and the stages are added one after the other, as scikit-learn adds them.
        """
        x32t = np.ascontiguousarray(np.asarray(x, dtype=np.float32).T)  # (D, N)
        n = x32t.shape[1]
        s, t, nodes = self._feature.shape
        depth = self.max_depth
        inner = 2**depth - 1
        raw = np.repeat(self._init[None, :], n, axis=0).astype(np.float64)  # (N, T)
        feat = self._feature.reshape(s * t, nodes).copy()
        val = self._value.reshape(s * t, nodes).copy()
        thr = self._threshold.reshape(s * t, nodes)
        for h in range(inner):
            leaf = feat[:, h] < 0
            for c in (2 * h + 1, 2 * h + 2):
                feat[leaf, c] = -1
                val[leaf, c] = val[leaf, h]
        leaf_val = val[:, inner:]  # (S T, 2**depth)
        fclip = np.maximum(feat[:, :inner], 0)
        chunk = max(1, 4_000_000 // max(n * t * inner, 1))  # stages per chunk
        pos = np.arange(n)
        for a in range(0, s, chunk):
            r0, r1 = a * t, min(s, a + chunk) * t
            goes_left = (x32t[fclip[r0:r1]] <= thr[r0:r1, :inner, None]).reshape(-1)
            base = (np.arange(r1 - r0) * (inner * n))[:, None] + pos[None, :]  # (R, N)
            local = np.zeros((r1 - r0, n), dtype=np.int64)  # node index within its level
            for k in range(depth):
                right = ~goes_left.take(base + (2**k - 1 + local) * n)
                local *= 2
                local += right
            contrib = np.take_along_axis(leaf_val[r0:r1], local, axis=1).reshape(-1, t, n)
            for stage_contrib in contrib:  # stage by stage, as scikit-learn adds them
                raw += self.learning_rate * stage_contrib.T
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels (N,)."""
        return self.predict_from_decision(self.decision_function(x))

    def predict_from_decision(self, raw: np.ndarray) -> np.ndarray:
        """Class labels (N,) of raw scores (N, T), e.g. ``train_decision_``."""
        if raw.shape[1] == 1:
            return self.classes_[(raw[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(raw, axis=1)]

