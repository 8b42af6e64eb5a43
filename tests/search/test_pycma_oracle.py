"""essa's CMA-ES update against pycma's reference implementation (`cma.purecma`, Hansen's own
tutorial code), as a test oracle: cma is a dev dependency only.

Both are told the same populations and rewards (no ties, no mirroring: the cases purecma covers),
and after every generation the mean, both evolution paths and the covariance must agree. Two rules
differ on purpose and are kept out of the comparison: purecma adapts sigma with its squared-norm
variant and damping 2·mu_eff/λ + 0.3 + c_σ, essa with the tutorial's ‖p_σ‖/χ_N rule (tested in
test_cma.py); so purecma's sigma is set to essa's before each generation. purecma refreshes its
eigenbasis lazily in ask(); here it is refreshed before every tell, as essa does for these sizes.
The separable variant is the full update restricted to the diagonal, with c1 and c_mu scaled by
(n + 2) / 3 (Ros & Hansen 2008): purecma with those rates and its off-diagonal zeroed each
generation is that algorithm.
"""

import numpy as np
import pytest

from essa.search.cma import CMAES

purecma = pytest.importorskip("cma.more_algorithms.purecma")


def _oracle(es: CMAES) -> "purecma.CMAES":
    ref = purecma.CMAES(list(es.mean), es.sigma, popsize=es.popsize)
    p = es.params
    # the parameters both derive from (dim, popsize) must already agree
    assert ref.params.mu == p.mu and ref.params.mueff == pytest.approx(p.mueff)
    assert np.allclose(ref.params.weights[: p.mu], p.weights)
    assert ref.params.cc == pytest.approx(p.cc) and ref.params.cs == pytest.approx(p.cs)
    if es.variant == "sep":
        ref.params.c1, ref.params.cmu = p.c1, p.cmu  # (n + 2) / 3 times the full rates
    assert ref.params.c1 == pytest.approx(p.c1) and ref.params.cmu == pytest.approx(p.cmu)
    return ref


def _covariance(es: CMAES) -> np.ndarray:
    return np.diag(es._C) if es.variant == "sep" else es._C


@pytest.mark.parametrize("variant", ["full", "sep"])
@pytest.mark.parametrize("dim, popsize", [(5, 8), (12, 10)])
def test_update_matches_pycma_reference(variant, dim, popsize):
    rng = np.random.default_rng(dim * 100 + popsize)
    es = CMAES(dim, popsize, 0.7, seed=3, variant=variant, mean0=rng.standard_normal(dim))
    ref = _oracle(es)
    target = rng.standard_normal(dim)
    for generation in range(1, 16):
        X = es.ask()
        rewards = -np.sum((X - target) ** 2 * np.arange(1, dim + 1), axis=1)  # an ellipsoid: no ties
        assert len(np.unique(rewards)) == popsize
        ref.sigma = es.sigma
        ref.C.update_eigensystem(ref.counteval, 0)  # the basis of the C told last, as essa's
        es.tell(X, rewards)
        ref.tell([list(x) for x in X], list(-rewards))  # purecma minimizes
        if variant == "sep":  # the separable algorithm: purecma's update, kept on the diagonal
            for i in range(dim):
                for j in range(dim):
                    if i != j:
                        ref.C[i][j] = 0.0
        where = f"generation {generation}"
        assert np.allclose(es.mean, ref.xmean, rtol=1e-10, atol=1e-12), where
        assert np.allclose(es._ps, ref.ps, rtol=1e-8, atol=1e-10), where
        assert np.allclose(es._pc, ref.pc, rtol=1e-8, atol=1e-10), where
        assert np.allclose(_covariance(es), np.array(ref.C), rtol=1e-8, atol=1e-12), where
    assert es.sigma != 0.7 and not np.allclose(es._C, np.eye(dim) if variant == "full" else 1.0)
