"Tests of pot_nb.ot: log-domain Sinkhorn against the POT library, stability, properties, marginals, confidence."
import math

import numpy as np
import ot as pot
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pot_nb.ot import (assignment_confidence, ot_assignment, similarity_marginals, sinkhorn, sinkhorn_plain,
                       uniform_marginals)


def random_problem(P, N, K, seed, p_zero=0.0, dtype=torch.float64, cost_scale=1.0):
    "Random costs and non-uniform masses summing to 1 per group; a share `p_zero` of the masses set to 0."
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(P, N, K, generator=g, dtype=dtype) * cost_scale
    a = (torch.rand(P, N, generator=g, dtype=dtype) + 0.05) * (torch.rand(P, N, generator=g) >= p_zero)
    b = (torch.rand(P, K, generator=g, dtype=dtype) + 0.05) * (torch.rand(P, K, generator=g) >= p_zero)
    live = (a.sum(1, keepdim=True) > 0) & (b.sum(1, keepdim=True) > 0)
    a = torch.where(live, a / a.sum(1, keepdim=True).clamp_min(1e-300), torch.zeros_like(a))
    b = torch.where(live, b / b.sum(1, keepdim=True).clamp_min(1e-300), torch.zeros_like(b))
    return cost, a, b


@pytest.mark.parametrize('eps', [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize('N,K', [(30, 4), (7, 7), (50, 2)])
def test_matches_pot_library(eps, N, K):
    cost, a, b = random_problem(3, N, K, seed=int(eps * 100) + N)
    T, info = sinkhorn(cost, a, b, eps=eps, n_iters=50000, tol=1e-13, return_info=True)
    assert T.dtype == torch.float64
    for p in range(3):
        ref = pot.bregman.sinkhorn_log(a[p].numpy(), b[p].numpy(), cost[p].numpy(), eps, numItermax=500000, stopThr=1e-15)
        np.testing.assert_allclose(T[p].numpy(), ref, rtol=1e-5, atol=1e-5 * ref.max())
    assert info['err'] <= 1e-13
    torch.testing.assert_close(T.sum(2), a, rtol=0, atol=1e-12)
    assert (T.sum(1) - b).abs().sum(1).max() <= 1e-13


def test_eps_means_pot_reg_and_potentials():
    "plan = exp((f + g - cost)/eps) with the returned potentials, as in POT's log-domain solver."
    cost, a, b = random_problem(2, 12, 3, seed=3)
    T, info = sinkhorn(cost, a, b, eps=0.2, n_iters=5000, tol=1e-14, return_info=True)
    torch.testing.assert_close(T, torch.exp((info['f'][:, :, None] + info['g'][:, None, :] - cost) / 0.2))
    ref = pot.sinkhorn(a[0].numpy(), b[0].numpy(), cost[0].numpy(), 0.2, method='sinkhorn_log', numItermax=100000, stopThr=1e-15)
    np.testing.assert_allclose(T[0].numpy(), ref, rtol=1e-5)


def test_zero_masses_match_pot_on_the_reduced_problem():
    cost, a, b = random_problem(4, 25, 6, seed=7, p_zero=0.3)
    T = sinkhorn(cost, a, b, eps=0.1, n_iters=20000, tol=1e-13)
    assert torch.isfinite(T).all()
    for p in range(4):
        r, c = a[p] > 0, b[p] > 0
        assert T[p][~r].abs().sum() == 0 and T[p][:, ~c].abs().sum() == 0
        if r.any():
            ref = pot.bregman.sinkhorn_log(a[p][r].numpy(), b[p][c].numpy(), cost[p][r][:, c].numpy(), 0.1,
                                           numItermax=200000, stopThr=1e-15)
            np.testing.assert_allclose(T[p][r][:, c].numpy(), ref, rtol=1e-5, atol=1e-5 * ref.max())


def test_all_zero_group_and_forbidden_pairs():
    cost, a, b = random_problem(3, 8, 3, seed=1)
    a[1], b[1] = 0, 0
    cost[2, :, 0] = math.inf                                   # class 0 forbidden for every pixel of group 2
    b[2] = torch.tensor([0., .5, .5], dtype=b.dtype)
    T = sinkhorn(cost, a, b, eps=0.1, n_iters=2000, tol=1e-10)
    assert torch.isfinite(T).all() and (T[1] == 0).all() and (T[2, :, 0] == 0).all()
    torch.testing.assert_close(T[2].sum(1), a[2])


def test_stable_at_small_eps_where_plain_sinkhorn_fails():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(4, 40, 3, generator=g) * 2                   # float32, costs in [0, 2]
    a, b = torch.full((4, 40), 1 / 40), torch.full((4, 3), 1 / 3)
    assert not torch.isfinite(sinkhorn_plain(cost, a, b, eps=0.01, n_iters=50)).all()
    T, info = sinkhorn(cost, a, b, eps=0.01, n_iters=3000, tol=1e-4, return_info=True)
    assert torch.isfinite(T).all() and T.dtype == torch.float32
    assert info['err'] <= 1e-4 and info['n_iters'] < 3000
    torch.testing.assert_close(T.sum(2), a, rtol=0, atol=1e-6)
    T2 = sinkhorn(cost, a, b, eps=1e-3, n_iters=50)               # even smaller: still finite
    assert torch.isfinite(T2).all() and (T2 >= 0).all()


def test_plain_sinkhorn_agrees_when_it_works():
    cost, a, b = random_problem(2, 10, 3, seed=5)
    torch.testing.assert_close(sinkhorn_plain(cost, a, b, eps=0.5, n_iters=500),
                               sinkhorn(cost, a, b, eps=0.5, n_iters=500, tol=0))


def test_early_stop_and_info():
    cost, a, b = random_problem(2, 20, 4, seed=2, dtype=torch.float32)
    T, info = sinkhorn(cost, a, b, eps=0.5, n_iters=1000, tol=1e-5, check_every=5, return_info=True)
    assert info['n_iters'] % 5 == 0 and info['n_iters'] < 1000
    assert abs((T.sum(1) - b).abs().sum(1).max().item() - info['err']) < 1e-6
    _, info1 = sinkhorn(cost, a, b, eps=0.5, n_iters=3, tol=0, return_info=True)
    assert info1['n_iters'] == 3 and info1['err'] > 0


def test_half_input_and_no_grad():
    cost, a, b = random_problem(2, 10, 3, seed=0, dtype=torch.float32)
    T = sinkhorn(cost.half(), a, b)
    assert T.dtype == torch.float16 and torch.isfinite(T).all()
    c = cost.clone().requires_grad_(True)
    assert not sinkhorn(c, a, b).requires_grad


def test_bad_input():
    cost, a, b = random_problem(2, 10, 3, seed=0)
    with pytest.raises(ValueError, match=r'cost must be \(P, N, K\)'): sinkhorn(cost[0], a, b)
    with pytest.raises(ValueError, match='a must be'): sinkhorn(cost, a[:, :3], b)
    with pytest.raises(ValueError, match='b must be'): sinkhorn(cost, a, b[:1])
    with pytest.raises(ValueError, match='eps'): sinkhorn(cost, a, b, eps=-1)
    with pytest.raises(ValueError, match='n_iters'): sinkhorn(cost, a, b, n_iters=0)


# ---------------------------------------------------------------- property tests (hypothesis)

problems = st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 5), st.integers(0, 10**6),
                     st.sampled_from([0.0, 0.3]), st.sampled_from([0.05, 0.1, 0.5, 1.0]))


@settings(max_examples=60, deadline=None)
@given(problems)
def test_plan_properties(prob):
    P, N, K, seed, p_zero, eps = prob
    cost, a, b = random_problem(P, N, K, seed, p_zero=p_zero, cost_scale=2.0)
    T, info = sinkhorn(cost, a, b, eps=eps, n_iters=20000, tol=1e-10, return_info=True)
    assert torch.isfinite(T).all() and (T >= 0).all()
    torch.testing.assert_close(T.sum(2), a, rtol=0, atol=1e-10)
    assert (T.sum(1) - b).abs().sum(1).max() <= 1e-10
    assert (T[a == 0] == 0).all()                              # zero-mass rows stay exactly zero
    assert (T.transpose(1, 2)[b == 0] == 0).all()              # and zero-mass columns
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    Tp = sinkhorn(cost[:, perm], a[:, perm], b, eps=eps, n_iters=20000, tol=1e-10)
    torch.testing.assert_close(Tp, T[:, perm], rtol=1e-6, atol=1e-9)   # permuting pixels permutes the plan


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 15), st.integers(1, 5), st.integers(0, 10**6),
       st.sampled_from([1e-3, 0.05, 0.1, 1.0]))
def test_similarity_marginals_properties(P, N, K, seed, tau):
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(P, N, K, generator=g, dtype=torch.float64) * 2 - 1
    mask = torch.rand(P, N, generator=g) < 0.7
    valid_k = torch.rand(P, K, generator=g) < 0.7
    a, b = similarity_marginals(sim, mask, tau=tau, valid_k=valid_k)
    assert torch.isfinite(a).all() and torch.isfinite(b).all() and (a >= 0).all() and (b >= 0).all()
    live = mask.any(1) & valid_k.any(1)
    torch.testing.assert_close(a.sum(1), live.double()); torch.testing.assert_close(b.sum(1), live.double())
    assert (a[~mask] == 0).all() and (b[~valid_k] == 0).all()
    # the formula, written naively in float64 (shift by the max for tiny tau only)
    for p in range(P):
        if not live[p]: continue
        s = sim[p][mask[p]][:, valid_k[p]] / tau
        la = s.max(1).values
        ar = torch.exp(la - la.max()); ar = ar / ar.sum()
        q = torch.softmax(s, 1)
        torch.testing.assert_close(a[p][mask[p]], ar)
        torch.testing.assert_close(b[p][valid_k[p]], ar @ q)
    perm = torch.randperm(N, generator=g)
    ap, bp = similarity_marginals(sim[:, perm], mask[:, perm], tau=tau, valid_k=valid_k)
    torch.testing.assert_close(ap, a[:, perm]); torch.testing.assert_close(bp, b)


def test_similarity_marginals_favour_significant_clusters():
    "A prototype that few pixels resemble gets little mass (uniform marginals would give it 1/K)."
    sim = torch.full((1, 100, 3), -0.2)
    sim[0, :60, 0], sim[0, 60:97, 1], sim[0, 97:, 2] = 0.9, 0.9, 0.9
    a, b = similarity_marginals(sim, None, tau=0.1)
    torch.testing.assert_close(a, torch.full((1, 100), 0.01))
    torch.testing.assert_close(b, torch.tensor([[0.6, 0.37, 0.03]]), atol=1e-4, rtol=0)
    au, bu = uniform_marginals(torch.ones(1, 100, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(bu, torch.full((1, 3), 1 / 3))
    Tu = sinkhorn(1 - sim, au, bu, eps=0.05, n_iters=1000)
    Ts = sinkhorn(1 - sim, a, b, eps=0.05, n_iters=1000)
    assert Tu[0, :97, 2].sum() > 0.25                          # equipartition sends a third of the big clusters' mass
    assert Ts[0, :97, 2].sum() < 1e-3                          # similarity-aware: the small prototype keeps to itself
    assert (ot_assignment(Ts, a)[0].argmax(1) == torch.tensor([0] * 60 + [1] * 37 + [2] * 3)).all()


def test_uniform_marginals():
    mask = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    valid = torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool)
    a, b = uniform_marginals(mask, valid)
    torch.testing.assert_close(a, torch.tensor([[1 / 3, 1 / 3, 0, 1 / 3], [0, 0, 0, 0], [0, 0, 0, 0]]))
    torch.testing.assert_close(b, torch.tensor([[1., 0], [0, 0], [0, 0]]))
    assert uniform_marginals(mask, valid, dtype=torch.float64)[0].dtype == torch.float64
    with pytest.raises(ValueError, match='uniform_marginals'): uniform_marginals(mask, valid[:2])


def test_marginals_bad_input():
    sim = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match='sim must be'): similarity_marginals(sim[0], None)
    with pytest.raises(ValueError, match='mask must be'): similarity_marginals(sim, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='valid_k must be'): similarity_marginals(sim, None, valid_k=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match='tau'): similarity_marginals(sim, None, tau=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 10), st.integers(1, 6), st.integers(0, 10**6))
def test_assignment_confidence_properties(P, N, K, seed):
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(P, K, generator=g) < 0.8
    q = torch.rand(P, N, K, generator=g, dtype=torch.float64) ** 3 * valid[:, None, :]
    q = q / q.sum(-1, keepdim=True).clamp_min(1e-300)
    q[:, 0] = 0                                                # a pixel of zero mass
    w = assignment_confidence(q, valid)
    assert w.shape == (P, N) and (w >= 0).all() and (w <= 1).all()
    assert (w[:, 0] == 0).all()
    kv = valid.sum(1)
    live = q.sum(-1) > 0
    assert (w[(kv <= 1)[:, None] & live] == 1).all()
    for p in range(P):
        if kv[p] > 1:
            qq = q[p][:, valid[p]]
            H = -(qq * qq.clamp_min(1e-300).log()).sum(-1)
            torch.testing.assert_close(w[p][live[p]], (1 - H / math.log(kv[p]))[live[p]])
    perm = torch.randperm(K, generator=g)
    torch.testing.assert_close(assignment_confidence(q[..., perm], valid[:, perm]), w)


def test_assignment_from_plan():
    cost, a, b = random_problem(2, 9, 3, seed=4, p_zero=0.2)
    T = sinkhorn(cost, a, b, eps=0.1, n_iters=5000, tol=1e-12)
    q = ot_assignment(T, a)
    torch.testing.assert_close(q.sum(-1), (a > 0).double())
    assert (q[a == 0] == 0).all()
    # a small eps makes the assignment (nearly) one-hot: confidence near 1; a large one spreads it
    cost, a, b = random_problem(1, 40, 4, seed=0, cost_scale=2.0)
    w_small = assignment_confidence(ot_assignment(sinkhorn(cost, a, b, eps=0.01, n_iters=3000), a)).mean()
    w_large = assignment_confidence(ot_assignment(sinkhorn(cost, a, b, eps=2.0), a)).mean()
    assert w_small > 0.9 and w_large < 0.2


def test_eps_equal_tau_gives_the_softmax():
    "With similarity-aware marginals and eps == tau the OT plan is exactly a_i * softmax_k(sim_ik / tau)."
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(4, 30, 5, generator=g, dtype=torch.float64) * 2 - 1
    mask = torch.rand(4, 30, generator=g) < 0.8
    valid = torch.rand(4, 5, generator=g) < 0.7
    valid[:, 0] = True
    a, b = similarity_marginals(sim, mask, tau=0.2, valid_k=valid)
    T, info = sinkhorn(1 - sim, a, b, eps=0.2, tol=1e-12, return_info=True)
    soft = torch.softmax((sim / 0.2).masked_fill(~valid[:, None, :], -math.inf), -1)
    torch.testing.assert_close(T, a[..., None] * soft)
    assert info['n_iters'] == 10                               # converged at the first check


def test_tolerance_floor_of_the_dtype():
    cost, a, b = random_problem(2, 30, 4, seed=0, dtype=torch.float32, cost_scale=2.0)
    T, info = sinkhorn(cost, a, b, eps=0.01, n_iters=5000, tol=0, return_info=True)
    floor = 4 * torch.finfo(torch.float32).eps * (1 + cost.max().item() / 0.01)
    assert info['tol'] == pytest.approx(floor, rel=1e-5)
    assert info['err'] <= info['tol'] and info['n_iters'] < 5000
    _, info64 = sinkhorn(cost.double(), a.double(), b.double(), eps=0.01, n_iters=5000, tol=0, return_info=True)
    assert info64['tol'] < 1e-12
    _, info_t = sinkhorn(cost, a, b, eps=0.5, tol=1e-3, return_info=True)
    assert info_t['tol'] == 1e-3                               # a tolerance above the floor is kept


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_exp_and_log_domain_agree(dtype):
    "The multiplicative fast path and the log domain give the same plan, potentials and per-group iterations."
    cost, a, b = random_problem(5, 40, 3, seed=4, p_zero=0.2, dtype=dtype, cost_scale=2.0)
    Te, ie = sinkhorn(cost, a, b, eps=0.05, n_iters=300, tol=1e-4, return_info=True, domain='exp')
    Tl, il = sinkhorn(cost, a, b, eps=0.05, n_iters=300, tol=1e-4, return_info=True, domain='log')
    Ta, ia = sinkhorn(cost, a, b, eps=0.05, n_iters=300, tol=1e-4, return_info=True)
    assert ie['domain'] == 'exp' and il['domain'] == 'log' and ia['domain'] == 'exp'     # spread 40 is safe
    torch.testing.assert_close(Te, Tl, rtol=1e-4, atol=1e-7)
    assert ie['n_iters'] == il['n_iters'] and torch.equal(ie['group_iters'], il['group_iters'])
    assert (ie['group_iters'] <= ie['n_iters']).all() and (ie['group_iters'] % 10 == 0).all()
    fin = torch.isfinite(il['f'])
    torch.testing.assert_close(torch.isfinite(ie['f']), fin)
    torch.testing.assert_close(Te, torch.exp((ie['f'][:, :, None] + ie['g'][:, None, :] - cost) / 0.05), rtol=1e-4, atol=1e-7)


def test_auto_domain_uses_log_where_exp_would_underflow():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 30, 3, generator=g) * 2
    a, b = torch.full((3, 30), 1 / 30), torch.full((3, 3), 1 / 3)
    _, info = sinkhorn(cost, a, b, eps=0.01, n_iters=2000, tol=1e-4, return_info=True)
    assert info['domain'] == 'log'                             # spread up to 200 > 43.7 in float32
    T = sinkhorn(cost, a, b, eps=0.001, n_iters=50, domain='exp')   # forced: finite (or redone in the log domain)
    assert torch.isfinite(T).all()
    torch.testing.assert_close(T.sum(2), a, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='domain'): sinkhorn(cost, a, b, domain='plain')
