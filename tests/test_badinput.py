"""Bad input through the whole pipeline: images, masks, labels, features, CAM files, checkpoints. Each gives a clear
error naming the file and the problem, or a recorded skip / warning, never NaN weights."""
import shutil, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from fastai.callback.core import Callback
from pot_nb.data import (DataError, DataWarning, SegDataset, load_image, load_mask, make_toy_voc, save_mask, wsss_dls,
                         load_dataset)
from pot_nb.loss import pot_loss
from pot_nb.prototypes import prototype_cams
from pot_nb.model import POTNet
from pot_nb.train import fit_pot, load_checkpoint, load_pot_model, save_checkpoint
from pot_nb.cams import make_cams, image_cams
from pot_nb.evaluate import evaluate_cams, load_cam, save_cam
from pot_nb.crf import make_pseudo_labels
from conftest import write_cams_from_masks



# ---------------------------------------------------------------- image and mask files

def test_corrupt_jpeg(tmp_path):
    root = make_toy_voc(tmp_path/'jpg', n=4, size=40, seed=0, n_val=2, img_format='jpg')
    p = root/'JPEGImages/toy_train_0001.jpg'
    p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])           # cut in the middle of the scan data
    with pytest.raises(DataError, match=r'toy_train_0001\.jpg: cannot read image \(OSError: image file is truncated'):
        load_image(p)
    with pytest.raises(DataError, match=r'toy_train_0001\.jpg: cannot read image'): SegDataset(root, validate=True)
    with pytest.warns(DataWarning, match='skipped 1 of 4 items'):
        ds = SegDataset(root, validate=True, on_error='skip')
    assert list(ds.skipped) == ['toy_train_0001'] and len(ds) == 3
    p.write_bytes(b'\xff\xd8\xff\xe0' + bytes(50))                      # a JPEG header and garbage
    with pytest.raises(DataError, match=r'toy_train_0001\.jpg: cannot read image'): load_image(p)

def test_truncated_png_mask(copy):
    p = copy/'SegmentationClass/toy_train_0002.png'
    p.write_bytes(p.read_bytes()[:70])
    with pytest.raises(DataError, match=r'toy_train_0002\.png: cannot read mask'): load_mask(p)
    ds = SegDataset(copy)
    with pytest.raises(DataError, match=r'SegmentationClass/toy_train_0002\.png: cannot read mask'): ds[2]
    with pytest.raises(DataError, match=r'toy_train_0002\.png: cannot read mask'): SegDataset(copy, label_source='masks').label(2)
    assert ds.item(2, with_mask=False)['img'].shape == (40, 40, 3)      # training needs no mask: still fine

def test_image_modes_load_as_rgb(copy):
    ds = SegDataset(copy)
    rgb = {n: ds.read_image(n) for n in ds.names[:4]}
    d = copy/'JPEGImages'
    n0, n1, n2, n3 = ds.names[:4]
    Image.fromarray(rgb[n0][..., 1]).save(d/f'{n0}.png')                                  # greyscale L
    Image.fromarray(np.dstack([rgb[n1], np.full((40, 40), 128, np.uint8)]), 'RGBA').save(d/f'{n1}.png')
    pal = Image.fromarray(rgb[n2]).convert('P', palette=Image.Palette.ADAPTIVE, colors=16); pal.save(d/f'{n2}.png')
    Image.fromarray(rgb[n3][..., 0].astype(np.uint16) * 257).save(d/f'{n3}.png')           # 16-bit greyscale
    assert [Image.open(d/f'{n}.png').mode for n in (n0, n1, n2, n3)] == ['L', 'RGBA', 'P', 'I;16']
    ds = SegDataset(copy, validate=True)
    np.testing.assert_array_equal(ds[0]['img'], np.repeat(rgb[n0][..., 1:2], 3, -1))
    np.testing.assert_array_equal(ds[1]['img'], rgb[n1])
    np.testing.assert_array_equal(ds[2]['img'], np.asarray(pal.convert('RGB')))
    np.testing.assert_array_equal(ds[3]['img'], np.repeat(rgb[n3][..., :1], 3, -1))       # 65535 -> 255, not clipped
    for i in range(4): assert ds[i]['img'].dtype == np.uint8 and ds[i]['img'].shape == (40, 40, 3)
    x, y, v = wsss_dls(copy, bs=4, size=32, device='cpu').train.one_batch()                 # and they train
    assert torch.isfinite(x).all() and x.shape == (4, 3, 32, 32)

def test_float_and_out_of_range_images(tmp_path):
    Image.fromarray(np.array([[0., .5], [1., .25]], np.float32)).save(tmp_path/'f.tiff')
    np.testing.assert_array_equal(load_image(tmp_path/'f.tiff')[..., 0], [[0, 128], [255, 64]])
    Image.fromarray(np.array([[0., 300.]], np.float32)).save(tmp_path/'g.tiff')
    with pytest.raises(DataError, match=r'g\.tiff: F image values 0\.\.300 fit neither'): load_image(tmp_path/'g.tiff')
    Image.fromarray(np.array([[0., np.nan]], np.float32)).save(tmp_path/'n.tiff')
    with pytest.raises(DataError, match=r'n\.tiff: F image holds NaN'): load_image(tmp_path/'n.tiff')

def test_images_smaller_than_the_crop(tmp_path):
    root = make_toy_voc(tmp_path/'small', n=4, size=12, seed=0, n_val=2)     # 12 px images, 64 px crops
    dls = wsss_dls(root, bs=2, size=64, device='cpu', scale=(0.5, 0.6))
    x, y, v = dls.train.one_batch()
    assert x.shape == (2, 3, 64, 64) and v.sum((1, 2)).max() <= 39 * 39 and (~v).any()   # resized to <= 39 px, then padded
    assert x.masked_select(~v[:, None]).abs().sum() == 0
    torch.manual_seed(0)
    model = POTNet(3, pretrained=False).eval()
    img = load_image(root/'JPEGImages/toy_train_0000.png')
    r = image_cams(model, img, np.array([1., 0., 1.], np.float32), scales=(1.0, 0.5), n_clusters=3)
    assert r['cls'].shape == (2, 12, 12) and r['proto'].shape == (2, 12, 12)  # a 1x1 feature grid at scale 0.5
    assert np.isfinite(r['cls']).all() and np.isfinite(r['proto']).all()

# ---------------------------------------------------------------- labels

def _set_label(root:Path, name:str, y):
    lab = np.load(root/'cls_labels.npy', allow_pickle=True).item()
    lab[name] = np.asarray(y, np.float32); np.save(root/'cls_labels.npy', lab)

def test_all_zero_labels_through_the_pipeline(copy, tmp_path):
    _set_label(copy, 'toy_train_0000', [0, 0, 0])
    ds = SegDataset(copy)
    assert ds.label(0).sum() == 0
    torch.manual_seed(0)
    model = POTNet(3, pretrained=False); model.pot_config = dict(method='pot', n_clusters=2, classes=list(ds.classes))
    d = make_cams(model, copy, 'train', out_dir=tmp_path/'cams', scales=(1.0,), progress=False)
    c = load_cam(d/'toy_train_0000.npy')
    assert c['keys'].tolist() == [] and c['high_res'].shape == (0, 40, 40)
    assert evaluate_cams(d, copy, 'train')['n_images'] == 8
    pl = make_pseudo_labels(d, copy, 'train', out_dir=tmp_path/'pl', crf=True)
    assert (np.asarray(Image.open(pl/'toy_train_0000.png')) == 0).all()        # all background
    # a training batch of unlabelled images: a finite loss and a finite step
    out = pot_loss(torch.randn(2, 3), torch.randn(2, 3, 5, 5), torch.randn(2, 8, 5, 5), torch.zeros(2, 3), n_clusters=3)
    assert torch.isfinite(out['loss']) and torch.isfinite(out['con'])

def _grads_finite(*ts): return all(t.grad is not None and torch.isfinite(t.grad).all() for t in ts)

def test_class_with_no_seed_pixel():
    torch.manual_seed(0)
    score, feat = torch.randn(2, 3, requires_grad=True), torch.randn(2, 8, 6, 6, requires_grad=True)
    cam = torch.randn(2, 3, 6, 6); cam[:, 0] = -100                  # class 0 labelled, but never the seed argmax
    cam.requires_grad_()
    lab = torch.tensor([[1., 0, 1], [1., 0, 0]])
    out = pot_loss(score, cam, feat, lab, n_clusters=3, lam=0.5, detach='none')   # gradients into the features too
    out['loss'].backward()
    assert torch.isfinite(out['loss']) and _grads_finite(score, cam, feat)
    assert torch.isfinite(out['proto'].cams).all()

def test_object_smaller_than_n_clusters():
    torch.manual_seed(0)
    feat = torch.randn(2, 8, 6, 6, requires_grad=True)
    cam = torch.full((2, 3, 6, 6), -100.); cam[:, 1, 2, 2] = 100; cam[:, 1, 3, 3] = 100   # a 2-pixel object, K = 5
    cam.requires_grad_()
    lab = torch.tensor([[0., 1, 0], [0., 1, 0]])
    out = pot_loss(torch.randn(2, 3, requires_grad=True), cam, feat, lab, n_clusters=5, lam=0.5, detach='none')
    out['loss'].backward()
    assert torch.isfinite(out['loss']) and _grads_finite(cam, feat)
    po = prototype_cams(feat.detach(), cam.detach(), lab, n_clusters=5)
    assert torch.isfinite(po.cams).all() and po.cams[:, 2].amax() > 0       # the object still lights up

def test_cls_labels_missing_names(copy):
    lab = np.load(copy/'cls_labels.npy', allow_pickle=True).item()
    del lab['toy_train_0003'], lab['toy_val_0001']
    np.save(copy/'cls_labels.npy', lab)
    with pytest.raises(DataError, match=r"cls_labels\.npy: no label for image 'toy_train_0003'"): wsss_dls(copy, device='cpu')
    with pytest.raises(DataError, match=r"cls_labels\.npy: no label for image 'toy_train_0003'"):
        fit_pot(copy, epochs=1, metrics=(), device='cpu')
    with pytest.warns(DataWarning, match="skipped 1 of 8 items"):
        ds = load_dataset(copy, 'train', on_error='skip')
    assert 'toy_train_0003' not in ds.names and len(ds) == 7

# ---------------------------------------------------------------- non-finite features in training

class _Poison(Callback):
    "Put NaN / inf into the features of some training iterations."
    def __init__(self, its:dict): self.its = its
    def after_pred(self):
        v = self.its.get(self.learn.train_iter) if self.training else None
        if v is not None:
            s, c, f = self.learn.pred
            f = f.clone(); f[:, :, 0, 0] = v
            self.learn.pred = (s, c, f)

def test_nan_and_inf_features_are_skipped_and_counted(toy, tmp_path):
    "lam=0.5: the features reach the loss (with lam=0 a training step never reads them)."
    with pytest.warns(RuntimeWarning, match='2 training steps had a non-finite loss or gradient'):
        learn = fit_pot(toy, epochs=2, bs=4, size=40, n_clusters=2, lam=0.5, metrics=(), path=tmp_path, n_valid=4,
                        device='cpu', cbs=[_Poison({1: float('nan'), 2: float('inf')})])
    assert learn.n_skipped == 2 and [s[:2] for s in learn.skipped_steps] == [(0, 1), (1, 0)]
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert all(np.isfinite(float(l)) for l in learn.recorder.losses)

def test_persistent_nan_stops_with_a_message(toy, tmp_path):
    with pytest.raises(RuntimeError, match='3 consecutive steps had a non-finite loss'):
        fit_pot(toy, epochs=2, bs=4, size=40, n_clusters=2, lam=0.5, metrics=(), path=tmp_path, n_valid=4, device='cpu',
                max_nonfinite=3, cbs=[_Poison({i: float('nan') for i in range(1, 10)})])
    state = torch.load(tmp_path/'models'/'pot.ckpt', weights_only=False)      # epoch 1 finished before the NaNs
    assert state['epoch'] == 1 and all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())

# ---------------------------------------------------------------- CAM files

def test_corrupt_and_partial_cam_files(toy, tmp_path):
    ds = SegDataset(toy)
    cams = tmp_path/'cams'; write_cams_from_masks(ds, cams)
    bad, part = cams/'toy_train_0002.npy', cams/'toy_train_0005.npy'
    whole = part.read_bytes()
    part.write_bytes(whole[:len(whole) // 3])                                  # partial copy
    with pytest.raises(ValueError, match=r'toy_train_0005\.npy: corrupt or partial CAM file'): evaluate_cams(cams, toy)
    with pytest.raises(ValueError, match=r'toy_train_0005\.npy: corrupt or partial CAM file'):
        make_pseudo_labels(cams, toy, out_dir=tmp_path/'pl', crf=False)
    part.write_bytes(whole)
    bad.write_bytes(b'\x93NUMPY garbage')
    with pytest.raises(ValueError, match=r'toy_train_0002\.npy: corrupt or partial CAM file'): evaluate_cams(cams, toy)
    np.save(bad, np.zeros(3))                                                  # loads, but is not a CAM dict
    with pytest.raises(ValueError, match=r'toy_train_0002\.npy: expected a pickled dict'): evaluate_cams(cams, toy)
    # make_cams does not take either as done in a folder of its own CAMs: both are computed again, with a warning each
    torch.manual_seed(0)
    model = POTNet(3, pretrained=False); model.pot_config = dict(method='pot', n_clusters=2, classes=list(ds.classes))
    own = make_cams(model, toy, 'train', out_dir=tmp_path/'own', scales=(1.0,), progress=False)
    part, bad = own/'toy_train_0005.npy', own/'toy_train_0002.npy'
    part.write_bytes(part.read_bytes()[:100]); np.save(bad, np.zeros(3))
    before = {p.name: p.stat().st_mtime_ns for p in own.glob('*.npy')}
    with pytest.warns(UserWarning, match='unreadable CAM file') as w:
        make_cams(model, toy, 'train', out_dir=own, scales=(1.0,), progress=False)
    assert sum('unreadable CAM file' in str(x.message) for x in w) == 2
    after = {p.name: p.stat().st_mtime_ns for p in own.glob('*.npy')}
    assert {k for k in before if before[k] != after[k]} == {'toy_train_0002.npy', 'toy_train_0005.npy'}
    assert load_cam(part)['kind'] == 'proto' and evaluate_cams(own, toy)['n_images'] == 8

def test_partial_pseudo_label_png_is_rewritten(toy, tmp_path):
    ds = SegDataset(toy)
    cams = tmp_path/'cams'; write_cams_from_masks(ds, cams)
    pl = make_pseudo_labels(cams, toy, out_dir=tmp_path/'pl', crf=False)
    p = pl/'toy_train_0004.png'; ref = np.asarray(Image.open(p))
    p.write_bytes(p.read_bytes()[:60])
    with pytest.warns(UserWarning, match=r'toy_train_0004\.png: unreadable pseudo-label PNG'):
        make_pseudo_labels(cams, toy, out_dir=pl, crf=False)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), ref)

# ---------------------------------------------------------------- checkpoints of other classes

def test_checkpoint_of_other_classes(tiny_run, tmp_path):
    root, learn, ckpt = tiny_run
    # a dataset with the same number of classes but other names
    other = Path(shutil.copytree(root, tmp_path/'other'))
    (other/'classes.txt').write_text('cat\ndog\nbird\n')
    runs = tmp_path/'runs'; (runs/'models').mkdir(parents=True); shutil.copy(ckpt, runs/'models'/'pot.ckpt')
    with pytest.raises(ValueError, match=r"pot\.ckpt was trained on other classes: class 0 is 'circle' there and 'cat' here"):
        fit_pot(other, epochs=2, bs=4, size=48, n_clusters=2, metrics=(), path=runs, resume=True, device='cpu')
    # another number of classes
    five = Path(shutil.copytree(root, tmp_path/'five'))
    (five/'classes.txt').write_text('a\nb\nc\nd\ne\n')
    lab = {k: np.concatenate([v, [0, 0]]).astype(np.float32) for k, v in np.load(five/'cls_labels.npy', allow_pickle=True).item().items()}
    np.save(five/'cls_labels.npy', lab)
    with pytest.raises(ValueError, match=r'pot\.ckpt was trained on other classes: 3 classes \(circle, square, triangle\), not 5'):
        fit_pot(five, epochs=2, bs=4, size=48, n_clusters=2, metrics=(), path=runs, resume=True, device='cpu')
    l5 = fit_pot(five, epochs=0, bs=4, size=48, metrics=(), path=tmp_path/'r5', device='cpu')
    l5.pot_config = {}                                                        # no names to compare: the shapes differ
    with pytest.raises(ValueError, match=r'pot\.ckpt does not fit this model: .* tensors differ in shape'):
        load_checkpoint(l5, ckpt)
    # a model of other classes cannot make CAMs for this dataset
    with pytest.raises(ValueError, match='the model scores 3 classes'):
        make_cams(load_pot_model(ckpt), five, 'train', out_dir=tmp_path/'c', progress=False)
    with pytest.raises(ValueError, match="class 0 is 'circle' in the checkpoint and 'cat' in the dataset"):
        make_cams(load_pot_model(ckpt), other, 'train', out_dir=tmp_path/'c', progress=False)
    # a file whose metadata and weights disagree, and files that are not checkpoints
    state = torch.load(ckpt, weights_only=False); state['meta']['classes'] = list('abcde')
    torch.save(state, tmp_path/'liar.ckpt')
    with pytest.raises(ValueError, match=r'liar\.ckpt: the weights do not fit a lite0 POTNet with the 5 classes'):
        load_pot_model(tmp_path/'liar.ckpt')
    (tmp_path/'cut.ckpt').write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r'cut\.ckpt: cannot read checkpoint'): load_pot_model(tmp_path/'cut.ckpt')
    torch.save([1, 2], tmp_path/'list.ckpt')
    with pytest.raises(ValueError, match=r'list\.ckpt is not a pot_nb checkpoint'): load_pot_model(tmp_path/'list.ckpt')
