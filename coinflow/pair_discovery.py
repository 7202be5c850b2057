"""Pair discovery: which pairs of a universe are cointegrated, without testing all N^2 of them. Pure code.

Input: a wide frame of log prices (index: event time; columns: pairs such as ``ETH/USDT``; NaN before a
listing and in gaps; an infinite value counts as missing).

1. Tickers with fewer than ``min_history_bars`` priced bars, or a constant price, are not tested (each
   counted with its reason in `Discovery.skipped`).
2. Clusters (`cluster_tickers`): each ticker's returns are standardised (a missing return counts as 0, the
   mean), PCA (scikit-learn) keeps ``pca_components`` components, and each ticker is placed at its loadings
   scaled by the component's standard deviation: the correlations of its returns with the components, so the
   distance between two tickers is about sqrt(2 (1 - their correlation)) as far as the components explain it.
   OPTICS (``min_samples``, ``xi``; Sarmento & Horta 2020, "Enhancing a pairs trading strategy with the
   application of machine learning") cuts the reachability ordering at its steep drops, so the clusters are
   the dense groups, with no distance threshold to choose; tickers in no cluster are not tested. DBSCAN with an
   eps from a correlation floor was tried and rejected: on the real 1-minute Binance files crypto returns are
   all correlated 0.5 to 0.8, so any eps chains the market into one cluster (ρ >= 0.7: 92 of 100 tiled
   tickers in one), while OPTICS finds the groups (23 clusters of 4-5).
3. Every pair within a cluster (`pair_statistics`): Engle-Granger both ways (statsmodels ``coint``; the pair's
   p-value is the smaller one times 2, Bonferroni over the two directions, and the smaller direction gives the
   hedge ratio), Johansen's trace statistic for no cointegrating vector against its critical value, and the
   spread's half-life, mean crossings and Hurst exponent (`coinflow.mean_reversion`), over the bars both
   tickers are priced.
4. Benjamini-Hochberg over all pairs tested (`adjust`), then acceptance (`rejections`): adjusted p at most
   ``fdr``, trace above its critical value, half-life within range, enough crossings, spread Hurst below the
   maximum.

`all_pairs` is the reference: steps 1, 3 and 4 over every pair of eligible tickers, with the same calls.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.cluster import OPTICS
from sklearn.decomposition import PCA
from statsmodels.stats.multitest import multipletests
from statsmodels.tsa.stattools import coint
from statsmodels.tsa.vector_ar.vecm import coint_johansen

from coinflow.mean_reversion import half_life, hurst_dfa, mean_crossings
from coinflow.pairs import pair_id
from coinflow.settings import PairsTrading

SHORT_HISTORY = "short_history"
CONSTANT = "constant"
SHORT_OVERLAP = "short_overlap"
TEST_FAILED = "test_failed"
JOHANSEN_COLUMN = {"90": 0, "95": 1, "99": 2}


@dataclass(frozen=True)
class PairTest:
    """One pair's tests: the chosen direction is ``y = hedge_ratio * x + intercept + spread``."""

    y: str
    x: str
    n_bars: int
    p_yx: float  # Engle-Granger, y regressed on x
    p_xy: float  # Engle-Granger, x regressed on y
    p_value: float  # min(1, 2 * min(p_yx, p_xy)): the pair's p-value before Benjamini-Hochberg
    johansen_trace: float
    johansen_critical: float
    hedge_ratio: float
    intercept: float
    half_life: float
    crossings: int
    hurst: float
    p_adjusted: float = math.nan
    accepted: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def pair_id(self) -> str:
        return pair_id(self.y, self.x)

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p_value)


@dataclass(frozen=True)
class Discovery:
    """A screening's result: every pair looked at, the clusters, and the tickers not tested and why."""

    pairs: tuple[PairTest, ...]
    clusters: tuple[tuple[str, ...], ...]
    unclustered: tuple[str, ...]
    skipped: dict[str, str]

    @property
    def tests(self) -> int:
        """Pairs whose cointegration tests ran (those entering the Benjamini-Hochberg correction)."""
        return sum(p.tested for p in self.pairs)

    @property
    def accepted(self) -> tuple[PairTest, ...]:
        return tuple(p for p in self.pairs if p.accepted)

    def frame(self) -> pd.DataFrame:
        """One row per pair looked at, with its statistics and why it was not accepted."""
        rows = [{"pair_id": p.pair_id, **asdict(p), "reasons": ",".join(p.reasons)} for p in self.pairs]
        return pd.DataFrame(rows, columns=["pair_id", *PairTest.__dataclass_fields__])


def finite_prices(log_prices: pd.DataFrame) -> pd.DataFrame:
    """The frame as floats with infinite values as missing."""
    return log_prices.astype(float).replace([np.inf, -np.inf], np.nan)


def screen_tickers(log_prices: pd.DataFrame, min_history_bars: int) -> tuple[list[str], dict[str, str]]:
    """The tickers that may be tested, and the others with their reason (too little history, a constant price)."""
    eligible: list[str] = []
    skipped: dict[str, str] = {}
    for ticker in log_prices.columns:
        values = log_prices[ticker].dropna().to_numpy()
        if len(values) < min_history_bars:
            skipped[ticker] = SHORT_HISTORY
        elif np.ptp(values) == 0:
            skipped[ticker] = CONSTANT
        else:
            eligible.append(ticker)
    return eligible, skipped


def standardised_returns(log_prices: pd.DataFrame) -> np.ndarray:
    """Bar returns, each ticker's scaled to mean 0 and variance 1; a missing return (a gap, before a listing) is 0."""
    returns = log_prices.diff().iloc[1:]
    std = returns.std().replace(0.0, np.nan)
    return ((returns - returns.mean()) / std).fillna(0.0).to_numpy()


def factor_loadings(standardised: np.ndarray, n_components: int) -> np.ndarray:
    """Each ticker's correlations with the leading principal components of the returns (tickers x components)."""
    k = max(1, min(n_components, standardised.shape[1] - 1, standardised.shape[0]))
    pca = PCA(n_components=k).fit(standardised)
    return np.asarray(pca.components_.T * np.sqrt(pca.explained_variance_))


def optics_labels(points: np.ndarray, min_samples: int, xi: float) -> np.ndarray:
    """OPTICS cluster labels of the points (-1: in no cluster); all -1 when there are too few points."""
    if len(points) < max(2, min_samples):
        return np.full(len(points), -1)
    return np.asarray(OPTICS(min_samples=min_samples, xi=xi).fit(points).labels_)


def cluster_tickers(
    log_prices: pd.DataFrame, tickers: Sequence[str], settings: PairsTrading
) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """The clusters of tickers by their return history, and the tickers in none."""
    if len(tickers) < 2:
        return (), tuple(tickers)
    loadings = factor_loadings(standardised_returns(log_prices[list(tickers)]), settings.pca_components)
    labels = optics_labels(loadings, settings.cluster_min_samples, settings.cluster_xi)
    clusters = tuple(
        tuple(t for t, label in zip(tickers, labels, strict=True) if label == c) for c in sorted(set(labels) - {-1})
    )
    unclustered = tuple(t for t, label in zip(tickers, labels, strict=True) if label == -1)
    return clusters, unclustered


def within_cluster_pairs(clusters: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """Every pair of tickers that share a cluster."""
    return [pair for cluster in clusters for pair in combinations(cluster, 2)]


def untested(a: str, b: str, n_bars: int, reason: str) -> PairTest:
    """A pair whose tests did not run, with why."""
    nan = math.nan
    return PairTest(a, b, n_bars, nan, nan, nan, nan, nan, nan, nan, math.inf, 0, nan, reasons=(reason,))


def engle_granger(y: np.ndarray, x: np.ndarray, settings: PairsTrading) -> float:
    """The p-value of Engle-Granger's test of y on x (no cointegration is the null)."""
    autolag = None if settings.adf_autolag == "none" else settings.adf_autolag
    return float(coint(y, x, trend="c", maxlag=settings.adf_max_lag, autolag=autolag)[1])


def johansen_trace(y: np.ndarray, x: np.ndarray, settings: PairsTrading) -> tuple[float, float]:
    """Johansen's trace statistic for no cointegrating vector, and its critical value at the chosen confidence."""
    result = coint_johansen(np.column_stack([y, x]), det_order=0, k_ar_diff=settings.adf_max_lag)
    return float(result.lr1[0]), float(result.cvt[0, JOHANSEN_COLUMN[settings.johansen_confidence]])


def hedge(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """OLS of y on x with a constant (Engle-Granger's first stage): slope and intercept."""
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def pair_statistics(a: str, b: str, prices_a: np.ndarray, prices_b: np.ndarray, settings: PairsTrading) -> PairTest:
    """The statistics of one pair over the bars both are priced (before the multiple-testing correction)."""
    both = np.isfinite(prices_a) & np.isfinite(prices_b)
    n = int(both.sum())
    if n < settings.min_history_bars:
        return untested(a, b, n, SHORT_OVERLAP)
    ya, xb = prices_a[both], prices_b[both]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collinearity and convergence warnings: the statistics say it
            p_ab, p_ba = engle_granger(ya, xb, settings), engle_granger(xb, ya, settings)
            trace, critical = johansen_trace(ya, xb, settings)
    except (ValueError, np.linalg.LinAlgError):
        return untested(a, b, n, TEST_FAILED)
    y, x, p_yx, p_xy = (a, b, p_ab, p_ba) if p_ab <= p_ba else (b, a, p_ba, p_ab)
    y_values, x_values = (ya, xb) if y == a else (xb, ya)
    slope, intercept = hedge(y_values, x_values)
    spread = y_values - slope * x_values - intercept
    return PairTest(
        y, x, n, p_yx, p_xy, min(1.0, 2 * p_yx), trace, critical, slope, intercept,
        half_life(spread), mean_crossings(spread), hurst_dfa(np.diff(spread)).h,
    )  # fmt: skip


def rejections(pair: PairTest, settings: PairsTrading) -> tuple[str, ...]:
    """Why a tested pair is not accepted (empty: accepted)."""
    checks = {
        "eg_fdr": pair.p_adjusted <= settings.fdr,
        "johansen_trace": pair.johansen_trace > pair.johansen_critical,
        "half_life": settings.min_half_life_bars <= pair.half_life <= settings.max_half_life_bars,
        "crossings": pair.crossings >= settings.min_crossings,
        "hurst": pair.hurst < settings.max_hurst,  # NaN (no estimate) fails
    }
    return tuple(name for name, ok in checks.items() if not ok)


def adjust(pairs: Sequence[PairTest], settings: PairsTrading) -> tuple[PairTest, ...]:
    """Benjamini-Hochberg over the tested pairs' p-values, then each pair's acceptance and reasons."""
    tested = [i for i, p in enumerate(pairs) if p.tested]
    adjusted = np.full(len(pairs), math.nan)
    if tested:
        adjusted[tested] = multipletests([pairs[i].p_value for i in tested], alpha=settings.fdr, method="fdr_bh")[1]
    out = []
    for pair, p_adj in zip(pairs, adjusted, strict=True):
        if not pair.tested:
            out.append(pair)
            continue
        reasons = rejections(replace(pair, p_adjusted=float(p_adj)), settings)
        out.append(replace(pair, p_adjusted=float(p_adj), accepted=not reasons, reasons=reasons))
    return tuple(out)


def pair_statistics_of(
    log_prices: pd.DataFrame, pairs: Iterable[tuple[str, str]], settings: PairsTrading
) -> list[PairTest]:
    """`pair_statistics` over the given pairs (columns read once)."""
    columns = {t: log_prices[t].to_numpy(dtype=float) for t in log_prices.columns}
    return [pair_statistics(a, b, columns[a], columns[b], settings) for a, b in pairs]


def discover(log_prices: pd.DataFrame, settings: PairsTrading) -> Discovery:
    """Pairs tested within clusters of tickers, corrected for the number tested, with their acceptance."""
    prices = finite_prices(log_prices)
    eligible, skipped = screen_tickers(prices, settings.min_history_bars)
    clusters, unclustered = cluster_tickers(prices, eligible, settings)
    pairs = adjust(pair_statistics_of(prices, within_cluster_pairs(clusters), settings), settings)
    return Discovery(pairs, clusters, unclustered, skipped)


def all_pairs(log_prices: pd.DataFrame, settings: PairsTrading) -> Discovery:
    """The reference: every pair of eligible tickers, with the same tests, correction and acceptance."""
    prices = finite_prices(log_prices)
    eligible, skipped = screen_tickers(prices, settings.min_history_bars)
    pairs = adjust(pair_statistics_of(prices, combinations(eligible, 2), settings), settings)
    return Discovery(pairs, (tuple(eligible),) if eligible else (), (), skipped)
