"POTNet: shapes on every kind of backbone, the stride-16 grid, frozen parts, parameter groups, weights loading."
import math, urllib.error, warnings
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pot_nb.model import (POTNet, param_groups, lite0_imagenet, timm_classifier_cam, load_lite0_weights, make_backbone,
                          resnet50_backbone, _is_bn)

warnings.filterwarnings('ignore', category=FutureWarning)


def _check_outputs(model, x, n_classes):
    with torch.no_grad(): score, cam, feat = model.eval()(x)
    B, _, H, W = x.shape
    h, w = math.ceil(H / 16), math.ceil(W / 16)
    assert score.shape == (B, n_classes)
    assert cam.shape == (B, n_classes, h, w)
    assert feat.shape == (B, model.feat_dim, h, w)
    torch.testing.assert_close(score, cam.mean((2, 3)))
    for s in feat.split(list(model.side_dims), 1):  # every side is a unit vector in every cell
        torch.testing.assert_close(s.norm(dim=1), torch.ones(B, h, w), atol=1e-4, rtol=0)
    return score, cam, feat


@pytest.fixture(scope='module')
def lite0():
    return POTNet(5)


def test_resnet50_shapes_and_grid():
    torch.manual_seed(0)
    m = POTNet(20, arch='resnet50', pretrained=False)
    assert (m.norm, m.feat_dim, m.backbone.reductions) == ('imagenet', 768, [4, 8, 16, 16])
    _check_outputs(m, torch.randn(2, 3, 96, 80), 20)
    _check_outputs(m, torch.randn(1, 3, 100, 75), 20)      # sizes that are not multiples of 16: ceil(H/16)


def test_lite0_shapes(lite0):
    assert (lite0.norm, lite0.feat_dim, lite0.arch) == ('lite0', 768, 'lite0')
    _check_outputs(lite0, torch.randn(2, 3, 128, 96), 5)
    _check_outputs(lite0, torch.randn(1, 3, 70, 90), 5)


@pytest.mark.parametrize('arch', ['resnet18', 'mobilenetv3_small_100'])
def test_small_timm_models(arch):
    m = POTNet(3, arch=arch, pretrained=False)
    assert m.norm == 'imagenet'
    _check_outputs(m, torch.randn(2, 3, 64, 96), 3)
    assert m.backbone.reductions[-1] == 16                    # dilated last stage: output_stride=16


def test_timm_model_without_output_stride_is_resized():
    "efficientvit cannot dilate: its stride-32 last stage is resized onto the stride-16 grid."
    m = POTNet(4, arch='efficientvit_b0', pretrained=False)
    assert m.backbone.reductions == [4, 8, 16, 32]
    _check_outputs(m, torch.randn(1, 3, 64, 64), 4)


def test_custom_side_dims_and_image_in_feat():
    m = POTNet(3, arch='resnet18', pretrained=False, side_dims=(32, 64), image_in_feat=True)
    assert m.feat_dim == 96 and len(m.sides) == 2 and m.sides[0].out_channels == 29   # 3 channels left for the image
    _check_outputs(m, torch.randn(1, 3, 64, 64), 3)
    with pytest.raises(ValueError, match='side_dims'): POTNet(3, arch='resnet18', pretrained=False, side_dims=(3, 8), image_in_feat=True)
    with pytest.raises(ValueError, match='n_classes'): POTNet(0, arch='resnet18', pretrained=False)


def test_unknown_arch():
    with pytest.raises(ValueError, match='neither resnet50'): POTNet(3, arch='no_such_net_xyz', pretrained=False)


def test_frozen_bn_and_stem_stay_frozen_in_train_mode():
    m = POTNet(5).train()   # its own model: this test trains it
    bns = [x for x in m.backbone.modules() if _is_bn(x)]
    assert bns and not any(b.training for b in bns)
    assert not any(p.requires_grad for b in bns for p in b.parameters())       # freeze_bn=True: affine too
    assert not m.backbone.body.conv_stem.weight.requires_grad
    stats = [b.running_mean.clone() for b in bns]
    stem = m.backbone.body.conv_stem.weight.clone()
    frozen_bn_w = bns[-1].weight.clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    score, cam, feat = m(torch.randn(2, 3, 64, 64))
    (F.multilabel_soft_margin_loss(score, torch.eye(5)[:2]) + (feat * torch.randn_like(feat)).mean()).backward()
    opt.step()
    assert all(torch.equal(a, b.running_mean) for a, b in zip(stats, bns))
    assert torch.equal(stem, m.backbone.body.conv_stem.weight)
    assert torch.equal(frozen_bn_w, bns[-1].weight)
    # fastai's unfreeze() sets requires_grad=True everywhere; the next train() restores the frozen parts
    for p in m.parameters(): p.requires_grad_(True)
    m.train()
    assert not m.backbone.body.conv_stem.weight.requires_grad


def test_freeze_options_resnet50():
    m = POTNet(3, arch='resnet50', pretrained=False, freeze_bn='stats', freeze_stages=2)
    body = m.backbone.body
    assert not body.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in body.layer1.parameters()) and not any(p.requires_grad for p in body.layer2.parameters())
    assert all(p.requires_grad for p in body.layer3.parameters())               # BN affine trainable with 'stats'
    assert not any(x.training for x in body.modules() if _is_bn(x))
    m2 = POTNet(3, arch='resnet50', pretrained=False)                           # from scratch: nothing frozen
    assert all(p.requires_grad for p in m2.parameters())
    assert all(x.training for x in m2.backbone.modules() if _is_bn(x))
    with pytest.raises(ValueError, match='freeze_bn'): POTNet(3, arch='resnet18', pretrained=False, freeze_bn='all')


def test_freeze_stages_stop_at_the_end_of_a_stage():
    m = POTNet(3, pretrained=False, freeze_stages=2)          # lite0 stages: blocks.1, blocks.2, blocks.4, blocks.6
    b = m.backbone.body.blocks
    assert not any(p.requires_grad for p in b[2].parameters()) and all(p.requires_grad for p in b[3].parameters())
    assert not m.backbone.body.conv_stem.weight.requires_grad
    assert not any(x.training for x in b[1].modules() if _is_bn(x))   # BN of frozen stages keeps its statistics
    assert all(x.training for x in b[3].modules() if _is_bn(x))


def test_detach_sides():
    for detach in (True, False):
        m = POTNet(3, arch='resnet18', pretrained=False, detach_sides=detach)
        _, _, feat = m(torch.randn(1, 3, 64, 64))
        (feat * torch.randn_like(feat)).sum().backward()
        bb_grad = sum(p.grad.abs().sum().item() for p in m.backbone.parameters() if p.grad is not None)
        assert all(p.grad is not None for p in m.sides.parameters())
        assert (bb_grad == 0) == detach


def test_param_groups_cover_every_parameter_once(lite0):
    groups = param_groups(lite0)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(lite0.parameters()))
    assert set(map(id, groups[1])) == set(map(id, list(lite0.sides.parameters()) + [lite0.classifier.weight]))
    with pytest.raises(TypeError): param_groups(torch.nn.Linear(2, 2))


def test_splitter_with_fastai_optimizer(lite0):
    from fastai.optimizer import SGD
    opt = SGD(param_groups(lite0), lr=1e-3)
    opt.set_hypers(lr=slice(1e-3, 1e-2))                    # the new layers get 10x the backbone's learning rate
    assert [h['lr'] for h in opt.hypers] == pytest.approx([1e-3, 1e-2])


def _photo(name, size=(224, 224)):
    from skimage import data
    x = torch.from_numpy(getattr(data, name)()[..., :3]).permute(2, 0, 1).float()[None]
    return (F.interpolate(x, size=size, mode='bilinear', antialias=True) - 127) / 128


def test_lite0_is_imagenet_trained():
    net = lite0_imagenet()
    with torch.no_grad():
        x = _photo('chelsea')
        cam, logits = timm_classifier_cam(net, x), net(x)
        cat, cup = logits.softmax(-1)[0], net(_photo('coffee')).softmax(-1)[0]
    assert cat.argmax().item() in range(281, 286) and cat[281:286].sum() > 0.8      # domestic cats
    assert cup.argmax().item() == 967 and cup[[967, 968, 504]].sum() > 0.8           # espresso, cup, coffee mug
    torch.testing.assert_close(cam.mean((2, 3)), logits, atol=1e-3, rtol=1e-4)


def test_lite0_backbone_has_the_same_weights_as_the_classifier(lite0):
    net = lite0_imagenet()
    torch.testing.assert_close(lite0.backbone.body.conv_stem.weight, net.conv_stem.weight)
    torch.testing.assert_close(lite0.backbone.body.blocks[6][0].conv_pwl.weight, net.blocks[6][0].conv_pwl.weight)


def test_lite0_bad_weights_file(tmp_path):
    import timm
    torch.save({'a.weight': torch.zeros(3)}, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match='bad.pth'): load_lite0_weights(timm.create_model('tf_efficientnet_lite0'), tmp_path/'bad.pth')


def test_resnet50_offline_error_is_clear(monkeypatch, tmp_path):
    torch.hub.set_dir(str(tmp_path))
    def offline(*a, **k): raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', offline)
    with pytest.raises(RuntimeError) as e: POTNet(20, arch='resnet50', pretrained=True)
    msg = str(e.value)
    assert 'could not download' in msg and 'weights=' in msg and 'pretrained=False' in msg and 'resnet50-' in msg


def test_resnet50_local_weights(tmp_path):
    import torchvision
    ref = torchvision.models.resnet50(weights=None)
    torch.save(ref.state_dict(), tmp_path/'r50.pth')
    m = POTNet(20, arch='resnet50', weights=tmp_path/'r50.pth')
    torch.testing.assert_close(m.backbone.body.layer3[2].conv2.weight, ref.layer3[2].conv2.weight)
    assert m.freeze_stages == 2 and not m.backbone.body.layer2[0].conv1.weight.requires_grad   # pretrained: SIPE freezing
    torch.save({'x': torch.zeros(1)}, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match='bad.pth'): resnet50_backbone(weights=tmp_path/'bad.pth')


def test_timm_local_weights(tmp_path):
    import timm
    ref = timm.create_model('resnet18', pretrained=False)
    torch.save(ref.state_dict(), tmp_path/'r18.pth')
    bb = make_backbone('resnet18', weights=tmp_path/'r18.pth')
    torch.testing.assert_close(bb.body.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
