"Tests of pot_nb.prototypes: shapes, label masking, the SIPE special case, determinism, batch scope, degenerate groups, marginals."
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from pot_nb.core import labels_with_bg, max_norm
from pot_nb.prototypes import (ProtoOutput, assemble_cams, cluster_prototypes, cluster_seeds, group_similarity,
                               make_groups, norm_cam, seed_map, two_part_example)
import pot_nb.prototypes as _prototypes


def prototype_cams(*args, **kw):
    "These tests check the plain re-activation against references: the background margin is off unless asked for."
    return _prototypes.prototype_cams(*args, **{'bg_contrast': False, **kw})



def rand_batch(B=3, C=4, D=8, h=6, w=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(B, D, h, w, generator=g, dtype=dtype)
    cam = torch.randn(B, C, h, w, generator=g, dtype=dtype)
    labels = (torch.rand(B, C, generator=g) < 0.5).to(dtype)
    labels[:, 0] = 1                                    # every image has at least one class
    return feat, cam, labels


def sipe_reference(feat, cam, labels):
    "SIPE's single prototype per class, written out: normalised mean seed feature, ReLU'd cosine, max-normalised."
    nc = norm_cam(cam, labels)
    lab = labels_with_bg(labels)
    seeds = F.one_hot(nc.masked_fill(lab[..., None, None] == 0, -1).argmax(1), lab.shape[1]).permute(0, 3, 1, 2)
    fn = F.normalize(feat, dim=1)
    proto = F.normalize(torch.einsum('bchw,bdhw->bcd', seeds.to(feat.dtype), fn), dim=-1)
    return max_norm(torch.relu(torch.einsum('bcd,bdhw->bchw', proto, fn))) * lab[..., None, None]


@pytest.mark.parametrize('k,scope', [(1, 'image'), (3, 'image'), (2, 'batch')])
def test_shapes_and_types(k, scope):
    feat, cam, labels = rand_batch()
    out = prototype_cams(feat, cam, labels, n_clusters=k, scope=scope)
    assert isinstance(out, ProtoOutput)
    B, C1, P = 3, 5, int(labels_with_bg(labels).sum())
    assert out.cams.shape == out.weight.shape == out.assign.shape == (B, C1, 6, 6)
    assert out.seeds.shape == (B, 6, 6) and out.seeds.dtype == torch.long
    assert out.q.shape == (P, 36, k) and out.groups.shape == (P, 2)
    G = P if scope == 'image' else int(labels_with_bg(labels).any(0).sum())
    assert out.protos.shape == (G, k, 8) and out.counts.shape == (G, k)
    assert int(out.counts.sum()) == B * 36                   # every pixel is the seed of exactly one class
    assert torch.isfinite(out.cams).all() and torch.isfinite(out.weight).all()
    assert out.cams.min() >= 0 and out.cams.max() <= 1
    assert out.weight.min() >= 0 and out.weight.max() <= 1


def test_absent_classes_are_zero():
    feat, cam, labels = rand_batch(seed=1)
    out = prototype_cams(feat, cam, labels, n_clusters=2)
    absent = labels_with_bg(labels) == 0
    assert absent.any()
    assert out.cams[absent].abs().sum() == 0 and out.weight[absent].abs().sum() == 0
    assert (out.assign[absent] == -1).all()
    assert ((out.seeds[:, None] == torch.arange(5)[None, :, None, None]) & absent[..., None, None]).sum() == 0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_k1_is_sipe(seed):
    feat, cam, labels = rand_batch(seed=seed)
    out = prototype_cams(feat, cam, labels, n_clusters=1)
    assert torch.allclose(out.cams, sipe_reference(feat, cam, labels), atol=1e-5)
    assert (out.weight[labels_with_bg(labels) > 0] == 1).all()      # q ≡ 1, weight 1
    assert out.n_iters == 0 and out.ot_iters == 0
    # K = 1 with OT on (ignored) or off gives the same maps
    assert torch.equal(out.cams, prototype_cams(feat, cam, labels, n_clusters=1, use_ot=False).cams)


def test_deterministic_for_a_seed():
    feat, cam, labels = rand_batch(B=4, D=16, h=8, w=8, seed=3)
    a = prototype_cams(feat, cam, labels, n_clusters=3, seed=7)
    b = prototype_cams(feat, cam, labels, n_clusters=3, seed=7)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor): assert torch.equal(x, y)
        else: assert x == y


def test_batch_scope_shares_prototypes():
    "Two images of the same class: with scope='batch' both use the pooled prototype; an image without seeds gets one."
    feat, cam, _ = rand_batch(B=2, C=2, seed=4)
    labels = torch.tensor([[1., 0.], [1., 0.]])
    cam[1, 0] = -1.0                                          # image 1's classifier sees nothing: no class seed there
    img = prototype_cams(feat, cam, labels, n_clusters=1, scope='image')
    bat = prototype_cams(feat, cam, labels, n_clusters=1, scope='batch')
    assert img.n_empty == 1 and bat.n_empty == 0
    assert img.cams[1, 1].abs().sum() == 0 and bat.cams[1, 1].max() > 0.99
    assert bat.protos.shape[0] == 2                           # background + the one class, shared by both images
    # hand-written pooled prototype of the class: seeds of both images together
    fn = F.normalize(feat, dim=1)
    s = (bat.seeds == 1)
    p = F.normalize(torch.einsum('bhw,bdhw->d', s.float(), fn), dim=0)
    ref = max_norm(torch.relu(torch.einsum('d,bdhw->bhw', p, fn))[:, None])[:, 0]
    assert torch.allclose(bat.cams[:, 1], ref, atol=1e-5)
    assert torch.allclose(bat.protos[1, 0], p, atol=1e-6)


def test_object_smaller_than_k_and_class_without_seed():
    feat, cam, _ = rand_batch(B=1, C=3, D=8, h=5, w=5, seed=5)
    labels = torch.tensor([[1., 1., 1.]])
    cam[0] = -1.
    cam[0, 0, 2, 2] = 5.; cam[0, 0, 2, 3] = 5.                # class 0: two seed pixels, fewer than K = 4
    cam[0, 1, 0, :] = 5.                                       # class 1: one row of seeds
    # class 2: no positive CAM anywhere -> no seed
    out = prototype_cams(feat, cam, labels, n_clusters=4)
    assert out.n_empty == 1
    assert out.cams[0, 3].abs().sum() == 0 and out.weight[0, 3].abs().sum() == 0
    assert (out.assign[0, 3] == -1).all()
    assert out.counts[1].tolist().count(0) >= 2               # class 0's group: at most 2 non-empty clusters
    assert torch.isfinite(out.cams).all() and torch.isfinite(out.weight).all() and torch.isfinite(out.q).all()
    assert out.cams[0, 1].max() > 0.99
    # gradients stay finite too
    f = feat.clone().requires_grad_()
    prototype_cams(f, cam, labels, n_clusters=4).cams.sum().backward()
    assert torch.isfinite(f.grad).all()


def test_single_pixel_image_and_all_invalid_pixels():
    feat, cam, labels = rand_batch(B=2, C=2, h=1, w=1, seed=6)
    out = prototype_cams(feat, cam, labels, n_clusters=3)
    assert torch.isfinite(out.cams).all()
    valid = torch.zeros(2, 1, 1, dtype=torch.bool)
    out = prototype_cams(feat, cam, labels, n_clusters=3, valid=valid)
    assert out.cams.abs().sum() == 0 and out.weight.abs().sum() == 0 and (out.seeds == -1).all()


def test_valid_mask_excludes_pixels():
    feat, cam, labels = rand_batch(B=2, h=6, w=6, seed=8)
    valid = torch.ones(2, 6, 6, dtype=torch.bool); valid[:, :, 4:] = False
    out = prototype_cams(feat, cam, labels, n_clusters=2, valid=valid)
    assert (out.seeds[:, :, 4:] == -1).all() and (out.seeds[:, :, :4] >= 0).all()
    assert out.weight[..., 4:].abs().sum() == 0 and out.cams[..., 4:].abs().sum() == 0
    assert int(out.counts.sum()) == 2 * 6 * 4


def lopsided_object(big=0.85, size=20, dim=16, noise=0.05, seed=0):
    "One class covering all but a 1-pixel border: a big part A (direction u) and a small part B (direction v)."
    g = torch.Generator().manual_seed(seed)
    u, v, w = torch.eye(dim)[:3]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    obj = (yy >= 1) & (yy < size - 1) & (xx >= 1) & (xx < size - 1)
    cut = 1 + int(big * (size - 2))
    part_a, part_b = obj & (xx < cut), obj & (xx >= cut)
    feat = torch.where(part_a[..., None], u, torch.where(part_b[..., None], v, w)) + noise * torch.randn(size, size, dim, generator=g)
    cam = torch.where(obj, 1.0, 0.0) + 0.01 * torch.randn(size, size, generator=g)
    return feat.permute(2, 0, 1)[None], cam[None, None], torch.ones(1, 1), part_a, part_b


def test_uniform_vs_similarity_marginals():
    """Uniform marginals force equal cluster masses: the small part's cluster must take pixels of the big part.
    Similarity-aware marginals give the small cluster a small mass and keep the big part in its own cluster."""
    feat, cam, labels, part_a, part_b = lopsided_object()
    sim_o = prototype_cams(feat, cam, labels, n_clusters=2, marginals='similarity')
    uni_o = prototype_cams(feat, cam, labels, n_clusters=2, marginals='uniform')
    p = int((sim_o.groups[:, 1] == 1).nonzero())               # the class's group
    kb = int(sim_o.assign[0, 1][part_b].mode().values)          # cluster of the small part
    qa_sim = sim_o.q[p].view(20, 20, 2)[part_a][:, kb].mean()
    qa_uni = uni_o.q[p].view(20, 20, 2)[part_a][:, kb].mean()
    assert qa_uni > 0.15 and qa_sim < 0.05 and qa_uni > 3 * qa_sim
    # the cluster masses the plans carry: ~ the part sizes with similarity marginals, 1/2 each with uniform ones
    mass_sim = sim_o.q[p].sum(0) / sim_o.q[p].sum()
    mass_uni = uni_o.q[p].sum(0) / uni_o.q[p].sum()
    assert mass_sim[kb] < 0.3 and abs(mass_uni[kb] - 0.5) < 0.02
    # the assignment of the big part is confident only with similarity-aware marginals
    assert sim_o.weight[0, 1][part_a].mean() > uni_o.weight[0, 1][part_a].mean() + 0.2


def test_two_part_object_needs_two_prototypes():
    ex = two_part_example(seed=1)
    one = prototype_cams(ex['feat'], ex['cam'], ex['labels'], n_clusters=1)
    two = prototype_cams(ex['feat'], ex['cam'], ex['labels'], n_clusters=2)
    assert one.cams[0, 1][ex['part_b']].mean() < 0.5 < 0.8 < two.cams[0, 1][ex['part_b']].mean()
    hard = prototype_cams(ex['feat'], ex['cam'], ex['labels'], n_clusters=2, use_ot=False)
    assert hard.cams[0, 1][ex['part_b']].mean() > 0.8 and hard.ot_iters == 0
    assert set(hard.q.unique().tolist()) <= {0., 1.}            # hard assignment is one-hot


def test_gradient_flows_into_features_only_through_maps():
    feat, cam, labels = rand_batch(seed=9)
    f = feat.clone().requires_grad_(); c = cam.clone().requires_grad_()
    out = prototype_cams(f, c, labels, n_clusters=2)
    assert out.cams.requires_grad and out.protos.requires_grad
    assert not out.weight.requires_grad and not out.q.requires_grad
    out.cams.sum().backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert c.grad is None                                       # seeds are constants: no gradient into the CAM here


def test_gradcheck_fixed_assignment():
    feat, cam, labels = rand_batch(B=2, C=2, D=4, h=3, w=3, seed=10, dtype=torch.float64)
    out = prototype_cams(feat, cam, labels, n_clusters=2)
    pg = make_groups(labels, out.seeds, 2)
    slot, _ = cluster_seeds(F.normalize(feat.flatten(2).transpose(1, 2), dim=-1), pg)
    def f(x):
        fn = F.normalize(x.flatten(2).transpose(1, 2), dim=-1)
        protos, _ = cluster_prototypes(fn, slot, len(pg.set_cls) * 2)
        return assemble_cams((out.q * torch.relu(group_similarity(fn, protos, pg))).sum(-1), pg.groups, out.cams.shape)
    assert torch.allclose(f(feat), out.cams)
    assert torch.autograd.gradcheck(f, (feat.clone().requires_grad_(),), eps=1e-6, atol=1e-5)


def test_bad_inputs():
    feat, cam, labels = rand_batch()
    with pytest.raises(ValueError, match='4-d'): prototype_cams(feat[0], cam, labels)
    with pytest.raises(ValueError, match='feature grid'): prototype_cams(feat, cam[..., :3], labels)
    with pytest.raises(ValueError, match='labels'): prototype_cams(feat, cam, labels[:, :2])
    with pytest.raises(ValueError, match='n_clusters'): prototype_cams(feat, cam, labels, n_clusters=0)
    with pytest.raises(ValueError, match='scope'): prototype_cams(feat, cam, labels, scope='dataset')
    with pytest.raises(ValueError, match='marginals'): prototype_cams(feat, cam, labels, n_clusters=2, marginals='x')


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), C=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5), k=st.integers(1, 4),
       scope=st.sampled_from(['image', 'batch']), marg=st.sampled_from(['similarity', 'uniform']), seed=st.integers(0, 99))
def test_property_random_inputs(B, C, h, w, k, scope, marg, seed):
    g = torch.Generator().manual_seed(seed)
    feat, cam = torch.randn(B, 6, h, w, generator=g), torch.randn(B, C, h, w, generator=g) * 3
    labels = (torch.rand(B, C, generator=g) < 0.6).float()
    out = prototype_cams(feat, cam, labels, n_clusters=k, scope=scope, marginals=marg)
    present = labels_with_bg(labels) > 0
    assert torch.isfinite(out.cams).all() and torch.isfinite(out.weight).all()
    assert out.cams[~present].abs().sum() == 0 and out.weight[~present].abs().sum() == 0
    assert 0 <= out.cams.min() and out.cams.max() <= 1 and 0 <= out.weight.min() and out.weight.max() <= 1
    fn = F.normalize(feat.flatten(2).transpose(1, 2), dim=-1)   # the maps are max_norm(Σ_k q·relu(cos)) of the prototypes
    sim = group_similarity(fn, out.protos.reshape(-1, feat.shape[1]), make_groups(labels, out.seeds, k, scope))
    raw = assemble_cams((out.q * sim.clamp_min(0)).sum(-1), out.groups, out.cams.shape, normalise=False)
    torch.testing.assert_close(out.cams, max_norm(raw), rtol=1e-4, atol=1e-5)
    live = out.q.sum(-1)
    assert torch.allclose(live[live > 0], torch.ones_like(live[live > 0]), atol=1e-3)   # q rows are distributions


def test_prototypes_and_similarities_from_unnormalised_views():
    "`cluster_prototypes` / `group_similarity` on a raw (B, N, D) view with a 1/‖f‖ scale = on normalised features."
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64) * 2
    labels = torch.tensor([[1., 0., 1.], [0., 1., 0.]], dtype=torch.float64)
    seeds = torch.randint(0, 4, (2, 4, 4), generator=g) * (torch.rand(2, 4, 4, generator=g) < 0.8) - (torch.rand(2, 4, 4, generator=g) < 0.1).long()
    for scope in ('image', 'batch'):
        pg = make_groups(labels, seeds.clamp(max=3) * 0 + torch.where(seeds >= 0, 0, -1), 2, scope=scope)
        raw = feat.flatten(2).transpose(1, 2)
        fn = F.normalize(raw, dim=-1)
        slot = torch.where(pg.seed_set >= 0, pg.seed_set * 2 + torch.randint(0, 2, pg.seed_set.shape, generator=g), -1)
        n = len(pg.set_cls) * 2
        p0, c0 = cluster_prototypes(fn, slot, n)
        p1, c1 = cluster_prototypes(raw, slot, n, pg, 1 / raw.norm(dim=-1))
        torch.testing.assert_close(p0, p1); assert torch.equal(c0, c1)
        torch.testing.assert_close(group_similarity(fn, p0, pg), group_similarity(raw, p0, pg, 1 / raw.norm(dim=-1)))


def test_reused_norms_and_prototypes_keep_the_reference_gradient():
    "prototype_cams takes the norms and prototypes from its k-means; values and gradients equal the differentiable formulas."
    g = torch.Generator().manual_seed(3)
    feat = (torch.randn(2, 8, 6, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    cam = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([[1., 0., 1.], [0., 1., 1.]], dtype=torch.float64)
    wt = torch.rand(2, 4, 6, 6, generator=g, dtype=torch.float64)
    out = prototype_cams(feat, cam, labels, n_clusters=2)
    (got,) = torch.autograd.grad((out.cams * wt).sum(), feat)
    fn, inv = feat.flatten(2).transpose(1, 2), 1 / feat.flatten(2).norm(dim=1)
    pg = make_groups(labels, out.seeds, 2)
    protos, counts = cluster_prototypes(fn, out.slot.flatten(1), out.protos.shape[0] * 2, pg, inv)
    torch.testing.assert_close(protos.view_as(out.protos), out.protos, rtol=0, atol=1e-12)
    assert torch.equal(counts.view_as(out.counts), out.counts)
    raw = assemble_cams((out.q * group_similarity(fn, protos, pg, inv).clamp_min(0)).sum(-1), out.groups, out.cams.shape, normalise=False)
    (ref,) = torch.autograd.grad((max_norm(raw) * wt).sum(), feat)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
