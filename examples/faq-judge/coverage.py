"""Coverage of the PPI interval vs the plain judge interval by simulation (docs/judge.md).

Human scores ~ Beta(3, 2) (true mean 0.6); the judge adds +0.15 and N(0, 0.1) noise, clipped to
[0, 1]; N = 200 judged items, n human-scored ones. Prints coverage of the nominal 95% intervals
over 2000 draws: classic PPI with the t quantile (what llm_ladder.ppi uses), the same with the
normal quantile (the paper's CLT interval), and the judge's own t interval.
Run: python examples/faq-judge/coverage.py
"""

import numpy as np
from scipy.stats import norm

from llm_ladder.ppi import mean_interval, ppi_mean

rng = np.random.default_rng(2023)
truth, draws, big_n = 0.6, 2000, 200
for n in (10, 30, 100):
    cov = {"ppi_t": 0, "ppi_z": 0, "plain": 0}
    width = []
    for _ in range(draws):
        y_l, y_u = rng.beta(3, 2, n), rng.beta(3, 2, big_n)
        f_l = np.clip(y_l + 0.15 + rng.normal(0, 0.1, n), 0, 1)
        f_u = np.clip(y_u + 0.15 + rng.normal(0, 0.1, big_n), 0, 1)
        iv = ppi_mean(f_u, f_l, y_l)
        cov["ppi_t"] += iv.low <= truth <= iv.high
        half = norm.ppf(0.975) * iv.se
        cov["ppi_z"] += iv.value - half <= truth <= iv.value + half
        p = mean_interval(f_u)
        cov["plain"] += p.low <= truth <= p.high
        width.append(iv.high - iv.low)
    print(f"n={n:3d}: PPI (t) {cov['ppi_t'] / draws:.3f}, PPI (normal) "
          f"{cov['ppi_z'] / draws:.3f}, plain judge {cov['plain'] / draws:.3f}; "
          f"mean PPI width {np.mean(width):.3f}")
