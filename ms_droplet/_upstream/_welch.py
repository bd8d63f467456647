# Licensed to the Apache Software Foundation (ASF) under one
# or more contributor license agreements.  See the NOTICE file
# distributed with this work for additional information
# regarding copyright ownership.  The ASF licenses this file
# to you under the Apache License, Version 2.0 (the
# "License"); you may not use this file except in compliance
# with the License.  You may obtain a copy of the License at
#
#   http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing,
# software distributed under the License is distributed on an
# "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
# KIND, either express or implied.  See the License for the
# specific language governing permissions and limitations
# under the License.
"""Welch's t-test without scipy, and how it replaces scipy in the patch's ``_droplet_stats``.

scipy is not a TVM dependency. The functions below are copied verbatim (``inspect.getsource``)
into the patch's ``_droplet_stats.py``, where ``_scipy_stats`` is ``scipy.stats`` when it can be
imported; here it is always None, so that these functions are the fallback itself (tested against
scipy). :func:`stats_fallback` rewrites the t-test call of ``_stats`` to use them.
"""

from __future__ import annotations

import inspect
import math
import re

from ._tree import UpstreamError

__all__ = ["FALLBACK", "stats_fallback", "student_t_cdf", "welch_less_pvalue"]

_scipy_stats = None


def _welch_less_pvalue(a, b) -> float:
    """One-sided p-value of Welch's t-test that the mean of ``a`` is less than that of ``b``.

    Uses ``scipy.stats.ttest_ind`` when scipy can be imported, otherwise the t distribution's CDF
    from the regularized incomplete beta function. Both sides need two samples or more and a
    positive pooled variance.
    """
    if _scipy_stats is not None:
        res = _scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less")
        return float(res.pvalue)
    t, df = _welch_t(a, b)
    return _student_t_cdf(t, df)


def _welch_t(a, b) -> tuple[float, float]:
    """Welch's t statistic of ``mean(a) - mean(b)`` and its degrees of freedom (Satterthwaite)."""
    na, nb = len(a), len(b)
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    va = math.fsum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = math.fsum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se2 = va + vb
    t = (ma - mb) / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return t, df


def _student_t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` (real, > 0) degrees of freedom at ``t``."""
    if math.isnan(t) or math.isnan(df):
        return math.nan
    if math.isinf(t):
        return 0.0 if t < 0 else 1.0
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))  # P(T < -|t|)
    return tail if t < 0 else 1.0 - tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


#: The functions copied into the patch, in order.
FALLBACK = (_welch_less_pvalue, _welch_t, _student_t_cdf, _betainc, _betacf)
#: The fallback under public names, for tests.
welch_less_pvalue = _welch_less_pvalue
student_t_cdf = _student_t_cdf

_SCIPY_IMPORT = """\
try:
    from scipy import stats as _scipy_stats
except ImportError:  # scipy is optional: _welch_less_pvalue has its own Student-t CDF
    _scipy_stats = None
"""

_TTEST_CALL = re.compile(
    r"^(?P<indent>[ \t]*)res = stats\.ttest_ind\((?P<a>\w+), (?P<b>\w+), equal_var=False, "
    r'alternative="less"\)\n(?P=indent)pvalue = float\(res\.pvalue\)\n',
    re.MULTILINE,
)


_TCDF_CALL = re.compile(r"\bstats\.t\.cdf\((?P<x>[^,()]+), df=(?P<df>[^()]+)\)")


def stats_fallback(source: str, header_end: int) -> str:
    """Make the t-tests of ``_stats`` work without scipy."""
    source, count = _TTEST_CALL.subn(
        r"\g<indent>pvalue = _welch_less_pvalue(\g<a>, \g<b>)\n", source
    )
    if count != 1:
        raise UpstreamError("_stats.py: the scipy t-test call to replace was not found")
    source, count = _TCDF_CALL.subn(r"_student_t_cdf(\g<x>, \g<df>)", source)
    if count != 1:
        raise UpstreamError("_stats.py: the scipy t CDF call to replace was not found")
    if re.search(r"\bstats\.", source):
        raise UpstreamError("_stats.py uses scipy.stats beyond ttest_ind: extend the fallback")
    lines = source.splitlines(keepends=True)
    lines.insert(header_end, "\n" + _SCIPY_IMPORT)
    fallback = "\n\n".join(inspect.getsource(fn) for fn in FALLBACK)
    return "".join(lines).rstrip("\n") + "\n\n\n" + fallback
