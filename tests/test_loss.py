"Tests of pot_nb.loss: the classification loss, the weighted consistency loss, pot_loss's methods and its gradients."
import pytest
import torch
import torch.nn.functional as F

from pot_nb.core import labels_with_bg
from pot_nb.loss import cls_loss, consistency_loss, pot_loss
from pot_nb.prototypes import norm_cam, prototype_cams


def batch(B=2, C=3, D=8, h=6, w=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(B, D, h, w, generator=g, dtype=dtype)
    cam = torch.randn(B, C, h, w, generator=g, dtype=dtype)
    labels = torch.zeros(B, C, dtype=dtype); labels[0, 0] = labels[0, 2] = labels[1, 1] = 1
    return feat, cam, labels


def test_cls_loss_is_multilabel_soft_margin():
    g = torch.Generator().manual_seed(0)
    score, labels = torch.randn(4, 5, generator=g), (torch.rand(4, 5, generator=g) < 0.4).float()
    ref = -(labels * F.logsigmoid(score) + (1 - labels) * F.logsigmoid(-score)).mean()
    assert torch.allclose(cls_loss(score, labels), ref, atol=1e-6)
    with pytest.raises(ValueError, match='same shape'): cls_loss(score, labels[:, :2])


def test_consistency_loss_values():
    g = torch.Generator().manual_seed(1)
    a, m = torch.rand(2, 4, 3, 3, generator=g), torch.rand(2, 4, 3, 3, generator=g)
    w = torch.rand(2, 4, 3, 3, generator=g)
    labels = torch.tensor([[1., 0., 1.], [0., 1., 0.]])
    lab = labels_with_bg(labels)[..., None, None].expand_as(a)
    d = (a - m).abs()
    assert torch.allclose(consistency_loss(a, m, w, labels), (w * lab * d).sum() / (w * lab).sum())
    assert torch.allclose(consistency_loss(a, m, w, labels, 'fixed'), (lab * d).sum() / lab.sum())
    assert torch.allclose(consistency_loss(a, m, None, labels), (lab * d).sum() / lab.sum())
    # absent classes never count: changing their maps changes nothing
    a2 = a.clone(); a2[0, 2] += 5
    assert torch.allclose(consistency_loss(a2, m, w, labels), consistency_loss(a, m, w, labels))
    # the valid mask drops pixels
    valid = torch.zeros(2, 3, 3, dtype=torch.bool); valid[:, 0] = True
    ref = (w * lab * d)[..., 0, :].sum() / (w * lab)[..., 0, :].sum()
    assert torch.allclose(consistency_loss(a, m, w, labels, valid=valid), ref)


def test_consistency_loss_degenerate_and_errors():
    a = torch.rand(1, 3, 2, 2)
    labels = torch.tensor([[1., 1.]])
    assert consistency_loss(a, a, None, labels) == 0
    zero = consistency_loss(a, torch.zeros_like(a), torch.zeros_like(a), labels)   # all weights 0: 0, not NaN
    assert torch.isfinite(zero) and zero == 0
    with pytest.raises(ValueError, match="'adaptive' or 'fixed'"): consistency_loss(a, a, None, labels, 'l1')
    with pytest.raises(ValueError, match='differ'): consistency_loss(a, a[:, :2], None, labels)


def test_consistency_gradients_reach_both_cams():
    feat, cam, labels = batch(dtype=torch.float64)
    cam = cam.requires_grad_()
    pc = torch.rand(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    consistency_loss(norm_cam(cam, labels), pc, None, labels).backward()
    assert cam.grad.abs().sum() > 0 and pc.grad.abs().sum() > 0
    w = torch.rand(2, 4, 6, 6, dtype=torch.float64)
    f = lambda c, p: consistency_loss(norm_cam(c, labels), p, w, labels)
    assert torch.autograd.gradcheck(f, (cam.detach().clone().requires_grad_(), pc), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize('method', ['cam', 'sipe', 'pot'])
def test_pot_loss_methods(method):
    feat, cam, labels = batch(seed=2)
    feat, cam = feat.requires_grad_(), cam.requires_grad_()
    score = cam.mean((2, 3))
    out = pot_loss(score, cam, feat, labels, method=method, lam=0.7, n_clusters=2, detach='none')   # both maps learn
    assert set(out) == {'loss', 'cls', 'con', 'proto'}
    assert torch.allclose(out['loss'], out['cls'] + 0.7 * out['con'])
    assert torch.allclose(out['cls'], cls_loss(score, labels))
    out['loss'].backward()
    assert torch.isfinite(cam.grad).all() and cam.grad.abs().sum() > 0
    if method == 'cam':
        assert out['proto'] is None and out['con'] == 0 and feat.grad is None
    else:
        assert torch.isfinite(feat.grad).all() and feat.grad.abs().sum() > 0 and out['con'] > 0
        k = 1 if method == 'sipe' else 2
        assert out['proto'].counts.shape[1] == k


def test_sipe_equals_k1_fixed_pot():
    feat, cam, labels = batch(seed=3)
    score = cam.mean((2, 3))
    sipe = pot_loss(score, cam, feat, labels, method='sipe', lam=1.0)
    pot1 = pot_loss(score, cam, feat, labels, method='pot', n_clusters=1, loss='fixed', use_ot=False, seeds='structure',
                    detach='none', bg_contrast=False, lam=1.0)
    assert torch.allclose(sipe['loss'], pot1['loss'])
    # the consistency term is the plain mean |Ã − M| over present classes and pixels
    lab = labels_with_bg(labels)[..., None, None].expand(-1, -1, 6, 6)
    d = (norm_cam(cam, labels) - sipe['proto'].cams).abs()
    assert torch.allclose(sipe['con'], (d * lab).sum() / lab.sum())


def test_adaptive_vs_fixed_weights():
    feat, cam, labels = batch(seed=4)
    score = cam.mean((2, 3))
    ad = pot_loss(score, cam, feat, labels, n_clusters=3, loss='adaptive')
    fx = pot_loss(score, cam, feat, labels, n_clusters=3, loss='fixed')
    po = ad['proto']
    nc = norm_cam(cam, labels)
    assert torch.allclose(ad['con'], consistency_loss(nc, po.cams, po.weight, labels))
    assert torch.allclose(fx['con'], consistency_loss(nc, po.cams, None, labels))
    assert not torch.allclose(ad['con'], fx['con'])


def test_valid_mask_is_pooled_to_the_grid():
    feat, cam, labels = batch(seed=5)
    score = cam.mean((2, 3))
    valid = torch.ones(2, 24, 24, dtype=torch.bool); valid[:, 12:] = False        # bottom half is padding
    out = pot_loss(score, cam, feat, labels, valid=valid, n_clusters=2)
    assert (out['proto'].seeds[:, 3:] == -1).all() and (out['proto'].seeds[:, :3] >= 0).all()
    same = pot_loss(score, cam, feat, labels, valid=valid[:, ::4, ::4], n_clusters=2)
    assert torch.allclose(out['loss'], same['loss'])


def test_pot_loss_errors():
    feat, cam, labels = batch()
    score = cam.mean((2, 3))
    with pytest.raises(ValueError, match="'pot', 'sipe' or 'cam'"): pot_loss(score, cam, feat, labels, method='x')
    with pytest.raises(ValueError, match='feature grid'): pot_loss(score, cam[..., :4], feat, labels)
    with pytest.raises(ValueError, match='scope'): pot_loss(score, cam, feat, labels, scope='x')


def test_training_steps_reduce_the_loss():
    "A few Adam steps on free features and CAM logits lower the POT loss (the gradients point the right way)."
    feat, cam, labels = batch(seed=6)
    feat, cam = feat.requires_grad_(), cam.requires_grad_()
    opt = torch.optim.Adam([feat, cam], lr=0.05)
    losses = []
    for _ in range(15):
        out = pot_loss(cam.mean((2, 3)), cam, feat, labels, n_clusters=2, detach='none', lam=0.5)
        opt.zero_grad(); out['loss'].backward(); opt.step()
        losses.append(out['loss'].item())
    assert losses[-1] < 0.8 * losses[0]
