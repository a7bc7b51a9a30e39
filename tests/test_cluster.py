"Tests of pot_nb.cluster: batched spherical k-means against a per-group loop, determinism, planted clusters, small groups, packing."
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from pot_nb import cluster, kmeans_cpu                  # importing kmeans_cpu registers the compiled kernel
from pot_nb.cluster import (KMeansResult, batched_kmeans, kmeans_groups, kmeans_image_groups, kmeans_pp_init, pack_groups,
                            unpack_groups)


@pytest.fixture(autouse=True, scope='module', params=['torch', 'kernel'])
def backend(request):
    "Every test runs on both k-means paths: torch ops, and the compiled per-group CPU kernel."
    if request.param == 'kernel' and kmeans_cpu.numba is None: pytest.skip('numba is not installed')
    before = cluster.KMEANS_BACKEND
    cluster.KMEANS_BACKEND = request.param
    yield request.param
    cluster.KMEANS_BACKEND = before


def test_backends_agree_on_image_groups(backend):
    "float32 features of 12 images in (image, row) groups: both paths give the same clusters and iterations."
    if backend != 'kernel': pytest.skip('compares both paths itself: once is enough')
    g = torch.Generator().manual_seed(4)
    B, N, D, k = 12, 200, 48, 3
    dirs = F.normalize(torch.randn(B, 4, D, generator=g), dim=-1)
    lab = torch.randint(0, 4, (B, N), generator=g)
    f = dirs.gather(1, lab[..., None].expand(B, N, D)) + 0.3 * torch.randn(B, N, D, generator=g)
    fn = f.transpose(1, 2).contiguous().transpose(1, 2)                     # channels-first maps, as a network gives
    row = torch.randint(-1, 3, (B, N), generator=g)
    table = torch.arange(B * 3).view(B, 3)
    before = cluster.KMEANS_BACKEND
    try:
        res = {}
        for b in ('torch', 'kernel'):
            if b == 'kernel' and kmeans_cpu.numba is None: continue
            cluster.KMEANS_BACKEND = b
            res[b] = kmeans_image_groups(fn, row, torch.arange(B), table, B * 3, k, seed=2, normalise=True)
    finally: cluster.KMEANS_BACKEND = before
    if len(res) < 2: pytest.skip('numba is not installed')
    a, b = res['torch'], res['kernel']
    assert torch.equal(a.assign, b.assign) and torch.equal(a.counts, b.counts) and torch.equal(a.group_iters, b.group_iters)
    torch.testing.assert_close(a.centers, b.centers, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.inv_norm, b.inv_norm, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match='KMEANS_BACKEND'):
        cluster.KMEANS_BACKEND = 'gpu'
        try: kmeans_image_groups(fn, row, torch.arange(B), table, B * 3, k)
        finally: cluster.KMEANS_BACKEND = before


def planted(P, N, D, k, spread=0.1, seed=0, dtype=torch.float32):
    "P groups of N points scattered around k random orthonormal directions each (k <= D), with random norms."
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(P, D, k, generator=g, dtype=torch.float64))[0].transpose(1, 2)
    lab = torch.randint(0, k, (P, N), generator=g)
    x = dirs.gather(1, lab[..., None].expand(P, N, D)) + spread * torch.randn(P, N, D, generator=g, dtype=torch.float64)
    return (x * (0.5 + torch.rand(P, N, 1, generator=g, dtype=torch.float64))).to(dtype), lab


def ref_kmeans(x, mask, k, n_iters, seed=0, n_trials=None, init=None):
    """Straightforward one-group-at-a-time spherical k-means with the same greedy k-means++ draws as
    `kmeans_pp_init` (k × n_trials × P uniforms from a CPU generator; step 0 uses the first of each group)."""
    P, N, D = x.shape
    L = 2 + int(math.log(k)) if n_trials is None else n_trials
    u = torch.rand(k, L, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dup = 16 * torch.finfo(x.dtype).eps
    centers_all, assign_all, counts_all = [], [], []
    for p in range(P):
        m = mask[p] & (x[p].norm(dim=-1) > 0)
        xn = torch.zeros_like(x[p])
        xn[m] = F.normalize(x[p][m], dim=-1)
        if init is None:
            C = torch.zeros(k, D, dtype=x.dtype)
            best = torch.full((N,), -math.inf, dtype=x.dtype)
            w = m.to(x.dtype)
            for t in range(k):
                cs = w.cumsum(0)
                tot = cs[-1]
                if not tot > 0: break
                pos = torch.nonzero(w > 0)[-1, 0]
                cands = []
                for j in range(1 if t == 0 else L):
                    target = (u[t, j, p] * tot.double()).to(x.dtype)
                    cands.append(min(int((cs <= target).sum()), int(pos)))
                pots = [((1 - torch.maximum(best, xn @ xn[i])).clamp_min(0) * m).sum() for i in cands]
                low = min(pots)                            # lowest potential; rounding-level ties: the first draw
                i = cands[next(j for j, q in enumerate(pots) if q <= low + 4 * dup * (low + 1))]
                C[t] = xn[i]
                best = torch.maximum(best, xn @ xn[i])
                d = (1 - best).clamp_min(0)
                w = torch.where(m & (d > dup), d, torch.zeros_like(d))
        else:
            C = F.normalize(init[p], dim=-1)
        valid = C.norm(dim=1) > 0
        pts = xn[m]
        a = torch.zeros(0, dtype=torch.long)
        counts = torch.zeros(k, dtype=torch.long)
        for _ in range(n_iters):
            sim = pts @ C.T
            sim[:, ~valid] = -math.inf
            a = sim.argmax(1)
            newC = torch.zeros_like(C)
            counts = torch.zeros(k, dtype=torch.long)
            for j in range(k):
                sel = a == j
                counts[j] = int(sel.sum())
                if counts[j]: newC[j] = F.normalize(pts[sel].sum(0), dim=0)
            C, valid = newC, counts > 0
        assign = torch.full((N,), -1, dtype=torch.long)
        if n_iters: assign[m] = a
        centers_all.append(C); assign_all.append(assign); counts_all.append(counts)
    return torch.stack(centers_all), torch.stack(assign_all), torch.stack(counts_all)


@pytest.mark.parametrize('k,D,seed', [(1, 4, 0), (3, 8, 1), (5, 16, 2), (4, 3, 3)])
def test_matches_per_group_loop(k, D, seed):
    P, N = 7, 40
    x = torch.randn(P, N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    sizes = torch.tensor([N, 0, 1, k - 1, k, N // 2, N - 3])
    mask = torch.arange(N)[None] < sizes[:, None]
    res = batched_kmeans(x, mask, k, n_iters=30, seed=seed, tol=1e-10)
    assert isinstance(res, KMeansResult)
    C, A, K = ref_kmeans(x, mask, k, res.n_iters, seed=seed)
    torch.testing.assert_close(res.centers, C, rtol=0, atol=1e-10)
    assert torch.equal(res.assign, A)
    assert torch.equal(res.counts, K)


def test_init_matches_per_group_loop():
    x, _ = planted(9, 60, 10, 4, spread=0.4, seed=5, dtype=torch.float64)
    mask = torch.rand(9, 60, generator=torch.Generator().manual_seed(0)) < 0.7
    for n_trials in (1, 3):
        c = kmeans_pp_init(x, mask, 4, seed=11, n_trials=n_trials)
        C, _, _ = ref_kmeans(x, mask, 4, 0, seed=11, n_trials=n_trials)
        torch.testing.assert_close(c, C, rtol=0, atol=1e-12)


def test_init_centers_argument_matches_loop():
    x, _ = planted(5, 50, 6, 3, spread=0.5, seed=2, dtype=torch.float64)
    mask = torch.ones(5, 50, dtype=torch.bool)
    init = torch.randn(5, 3, 6, dtype=torch.float64)
    init[1, 2] = 0                                            # starts empty, stays empty
    res = batched_kmeans(x, mask, 3, n_iters=15, tol=0, init_centers=init)
    C, A, K = ref_kmeans(x, mask, 3, res.n_iters, init=init)
    torch.testing.assert_close(res.centers, C, rtol=0, atol=1e-10)
    assert torch.equal(res.assign, A) and torch.equal(res.counts, K)
    assert res.counts[1, 2] == 0
    with pytest.raises(ValueError, match='init_centers'):
        batched_kmeans(x, mask, 3, init_centers=init[:, :2])


def test_deterministic_and_seed_dependent():
    x, _ = planted(6, 80, 12, 4, spread=0.6, seed=0)
    mask = torch.rand(6, 80, generator=torch.Generator().manual_seed(1)) < 0.8
    r1, r2 = batched_kmeans(x, mask, 4, seed=3), batched_kmeans(x, mask, 4, seed=3)
    assert torch.equal(r1.centers, r2.centers) and torch.equal(r1.assign, r2.assign) and r1.n_iters == r2.n_iters
    assert not torch.equal(kmeans_pp_init(x, mask, 4, seed=3), kmeans_pp_init(x, mask, 4, seed=4))
    assert r1.centers.dtype == torch.float32 and r1.assign.dtype == torch.long and r1.counts.dtype == torch.long


def test_does_not_modify_input_and_no_grad():
    x, _ = planted(3, 30, 5, 2, seed=0)
    x.requires_grad_(True)
    x0 = x.detach().clone()
    res = batched_kmeans(x, None, 2)
    assert torch.equal(x.detach(), x0)
    assert not res.centers.requires_grad


@pytest.mark.parametrize('seed,k', [(0, 3), (1, 3), (2, 4)])
def test_recovers_planted_clusters(seed, k):
    "Orthogonal planted directions: overall purity >= 0.99 and (greedy k-means++) at most 2% of groups imperfect."
    P, N = 200, 100
    x, lab = planted(P, N, 32, k, spread=0.08, seed=seed)
    mask = torch.rand(P, N, generator=torch.Generator().manual_seed(seed)) < 0.9
    res = batched_kmeans(x, mask, k, seed=seed)
    correct, imperfect = 0, 0
    for p in range(P):
        a, l = res.assign[p][mask[p]], lab[p][mask[p]]
        tab = torch.zeros(k, k, dtype=torch.long).index_put_((a, l), torch.ones_like(a), accumulate=True)
        c = int(tab.amax(1).sum())
        correct += c
        imperfect += c < len(a)
    assert correct / int(mask.sum()) >= 0.99
    assert imperfect <= 0.02 * P
    assert res.n_iters < 50


@pytest.mark.parametrize('k', [1, 2, 3, 6])
def test_small_and_empty_groups(k):
    N = 12
    x = torch.randn(6, N, 5, generator=torch.Generator().manual_seed(k))
    sizes = torch.tensor([0, 1, max(k - 1, 0), k, N, N])
    mask = torch.arange(N)[None] < sizes[:, None]
    x[5] = x[5, :1]                                          # group 5: N copies of one point
    res = batched_kmeans(x, mask, k, seed=1)
    assert torch.isfinite(res.centers).all()
    assert torch.equal(res.counts.sum(1), sizes)
    assert torch.equal((res.counts > 0).sum(1), torch.tensor([0, 1, max(k - 1, 0), k, min(k, N), 1]))
    empty = res.counts == 0
    assert res.centers[empty].abs().sum() == 0
    torch.testing.assert_close(res.centers.norm(dim=-1)[~empty], torch.ones(int((~empty).sum())))
    assert (res.assign[~mask] == -1).all()
    a = res.assign[mask]
    assert ((a >= 0) & (a < k)).all()
    assert not empty.gather(1, res.assign.clamp(min=0))[mask].any()    # never assigned to an empty cluster


def test_zero_points_and_degenerate_shapes():
    x = torch.randn(2, 5, 3)
    x[0, 1] = 0                                              # a zero vector has no direction: left out
    res = batched_kmeans(x, None, 2)
    assert res.assign[0, 1] == -1 and res.counts[0].sum() == 4 and res.counts[1].sum() == 5
    r0 = batched_kmeans(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.bool), 2)
    assert r0.centers.shape == (3, 2, 4) and r0.assign.shape == (3, 0) and (r0.counts == 0).all()
    r1 = batched_kmeans(torch.zeros(0, 5, 4), torch.zeros(0, 5, dtype=torch.bool), 2)
    assert r1.centers.shape == (0, 2, 4)


def test_bad_input():
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r'\(P, N, D\)'): batched_kmeans(x[0], None, 2)
    with pytest.raises(ValueError, match='mask must be'): batched_kmeans(x, torch.ones(2, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match='k must be'): batched_kmeans(x, None, 0)
    with pytest.raises(ValueError, match='n_iters'): batched_kmeans(x, None, 2, n_iters=0)
    with pytest.raises(TypeError, match='floating point'): batched_kmeans(torch.ones(2, 5, 3, dtype=torch.long), None, 2)


def test_float64_and_half_inputs():
    x, _ = planted(4, 30, 6, 2, seed=0, dtype=torch.float64)
    assert batched_kmeans(x, None, 2).centers.dtype == torch.float64
    rh = batched_kmeans(x.to(torch.bfloat16), None, 2)
    assert rh.centers.dtype == torch.bfloat16 and torch.isfinite(rh.centers.float()).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_same_result_on_gpu():
    x, _ = planted(16, 200, 32, 3, spread=0.3, seed=0, dtype=torch.float64)
    mask = torch.rand(16, 200, generator=torch.Generator().manual_seed(0)) < 0.8
    rc = batched_kmeans(x, mask, 3, seed=7)
    rg = batched_kmeans(x.cuda(), mask.cuda(), 3, seed=7)
    assert torch.equal(rc.assign, rg.assign.cpu()) and torch.equal(rc.counts, rg.counts.cpu())
    torch.testing.assert_close(rc.centers, rg.centers.cpu())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-1, 4), min_size=0, max_size=60), st.integers(5, 7))
def test_pack_unpack_roundtrip(ids, n_groups):
    M = len(ids)
    gid = torch.tensor(ids, dtype=torch.long).reshape(M)
    x = torch.randn(M, 3)
    pg = pack_groups(x, gid, n_groups)
    counts = torch.bincount(gid[gid >= 0], minlength=n_groups)
    assert pg.x.shape == (n_groups, int(counts.max()) if M and (gid >= 0).any() else 0, 3)
    assert torch.equal(pg.mask.sum(1), counts)
    assert torch.equal(pg.mask, pg.index >= 0)
    assert (pg.x[~pg.mask] == 0).all()
    for p in range(n_groups):                                # members of each group, in their original order
        assert torch.equal(pg.index[p][pg.mask[p]], torch.nonzero(gid == p)[:, 0])
        assert torch.equal(pg.x[p][pg.mask[p]], x[gid == p])
    back = unpack_groups(pg.x, pg.index, M, fill=float('nan'))
    assert torch.equal(back[gid >= 0], x[gid >= 0]) and back[gid < 0].isnan().all()


def test_pack_groups_errors_and_padding():
    x, gid = torch.randn(6, 2), torch.tensor([0, 1, 1, -1, 0, 1])
    assert pack_groups(x, gid, 2, n_max=5).x.shape == (2, 5, 2)
    with pytest.raises(ValueError, match='largest group'): pack_groups(x, gid, 2, n_max=2)
    with pytest.raises(ValueError, match='n_groups'): pack_groups(x, gid, 1)
    with pytest.raises(ValueError, match=r'\(M,\)'): pack_groups(x, gid[:5], 2)
    with pytest.raises(ValueError, match=r'\(M, D\)'): pack_groups(x[None], gid, 2)
    with pytest.raises(ValueError, match='index shape'): unpack_groups(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), 6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4), st.integers(0, 20), st.integers(1, 5), st.integers(1, 5), st.integers(0, 10**6),
       st.booleans())
def test_invariants(P, N, D, k, seed, duplicates):
    "For any shapes and masks: finite output, consistent counts, centres = normalised means of their members."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, N, D, generator=g, dtype=torch.float64)
    if duplicates and N: x = x[:, torch.randint(0, N, (N,), generator=g) % 3]   # at most 3 distinct points
    mask = torch.rand(P, N, generator=g) < 0.7
    res = batched_kmeans(x, mask, k, seed=seed)
    assert res.centers.shape == (P, k, D) and res.assign.shape == (P, N) and res.counts.shape == (P, k)
    assert torch.isfinite(res.centers).all() and 1 <= res.n_iters <= 50
    assert torch.equal(res.counts.sum(1), mask.sum(1))
    assert (res.assign[~mask] == -1).all() and ((res.assign[mask] >= 0) & (res.assign[mask] < k)).all()
    xn = F.normalize(x, dim=-1)
    for p in range(P):
        for j in range(k):
            members = res.assign[p] == j
            assert int(members.sum()) == int(res.counts[p, j])
            if members.any():
                s = xn[p][members].sum(0)
                if s.norm() > 1e-6:   # members that cancel out (e.g. +1 and -1 in 1-D) have no direction to compare
                    torch.testing.assert_close(res.centers[p, j], F.normalize(s, dim=0))
            else:
                assert (res.centers[p, j] == 0).all()


def test_kmeans_groups_matches_batched_kmeans_on_packed_groups():
    "Groups given by an id per row (any order, some rows in no group) = the padded (P, N, D) call on the same groups."
    g = torch.Generator().manual_seed(3)
    M, D, G, k = 300, 12, 5, 3
    x = torch.randn(M, D, generator=g, dtype=torch.float64)
    gid = torch.randint(-1, G, (M,), generator=g)
    res = kmeans_groups(x, gid, G, k, seed=2, tol=1e-10, scale=1 / x.norm(dim=-1))
    pg = pack_groups(x, gid, G)
    ref = batched_kmeans(pg.x, pg.mask, k, seed=2, tol=1e-10)
    torch.testing.assert_close(res.centers, ref.centers, rtol=0, atol=1e-10)
    assert torch.equal(res.assign, unpack_groups(ref.assign, pg.index, M, fill=-1))
    assert torch.equal(res.counts, ref.counts) and res.n_iters == ref.n_iters
    assert torch.equal(res.group_iters, ref.group_iters) and int(res.group_iters.max()) == res.n_iters
    with pytest.raises(ValueError, match='n_groups'): kmeans_groups(x, gid, 2, k)


@pytest.mark.parametrize('layout', ['rows', 'maps'])
@pytest.mark.parametrize('chunk', [None, 1])
def test_kmeans_image_groups_matches_kmeans_groups(layout, chunk, monkeypatch):
    "Pixels of feature maps grouped per (image, row): same result for row-major and channels-first features, in one chunk or per image."
    g = torch.Generator().manual_seed(0)
    B, N, D, k = 3, 50, 8, 2
    f = torch.randn(B, N, D, generator=g, dtype=torch.float64) * 3
    row = torch.randint(-1, 3, (B, N), generator=g)
    table = torch.tensor([[0, 1, 2], [3, 4, -1], [5, 6, 7]])
    block = torch.arange(B)
    fn = f if layout == 'rows' else f.transpose(1, 2).contiguous().transpose(1, 2)
    if chunk: monkeypatch.setattr(cluster._Tiles.from_maps.__func__, '__defaults__', (None, 64, 1, False))   # one image per chunk
    scale = 1 / f.norm(dim=-1)
    res = kmeans_image_groups(fn, row, block, table, 8, k, seed=1, tol=1e-10, scale=scale)
    gid = torch.where(row >= 0, table[block[:, None], row.clamp_min(0)], -1)
    ref = kmeans_groups(f.reshape(B * N, D), gid.view(-1), 8, k, seed=1, tol=1e-10, scale=scale.view(-1))
    torch.testing.assert_close(res.centers, ref.centers, rtol=0, atol=1e-10)
    assert torch.equal(res.assign.view(-1), ref.assign) and torch.equal(res.counts, ref.counts)
    own = kmeans_image_groups(fn, row, block, table, 8, k, seed=1, tol=1e-10, normalise=True)   # norms taken inside
    torch.testing.assert_close(own.centers, ref.centers, rtol=0, atol=1e-10)
    assert torch.equal(own.assign, res.assign) and torch.equal(own.counts, res.counts)
    torch.testing.assert_close(own.inv_norm, torch.where(gid >= 0, scale, 0.), rtol=1e-12, atol=0)   # 0 off the groups


def _child_kmeans(x, q):
    torch.set_num_threads(2)                                  # a child that asks for threads anyway
    q.put(batched_kmeans(x, None, 3, seed=5).assign.tolist())     # a list: no shared-memory tensor to outlive the child


def test_kernel_runs_in_a_forked_child(backend):
    """After the parent ran the kernel on two threads (OpenMP started), a forked child runs it too (on one thread:
    GNU OpenMP cannot start threads in a forked child), with the same result. Small inputs: no torch op in the child
    is big enough to start torch's own (equally fork-unsafe) threads."""
    if backend != 'kernel': pytest.skip('the torch path in a forked child is torch\'s own business')
    import multiprocessing as mp
    x = torch.randn(4, 100, 16, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try: ref = batched_kmeans(x, None, 3, seed=5).assign
    finally: torch.set_num_threads(before)
    ctx = mp.get_context('fork')
    q = ctx.Queue()
    p = ctx.Process(target=_child_kmeans, args=(x, q))
    p.start()
    try: got = q.get(timeout=120)
    finally:
        p.join(timeout=30)
        if p.is_alive(): p.kill()
    assert p.exitcode == 0 and got == ref.tolist()
