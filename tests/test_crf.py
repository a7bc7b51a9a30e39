"Dense CRF and pseudo-label writing: sharpening, IRN semantics, greyscale PNGs every reader takes, resumable atomic output."
import os
import numpy as np
import pytest
from conftest import write_cams_from_masks
from PIL import Image
from scipy import ndimage
from pot_nb.core import voc_palette
from pot_nb.evaluate import save_cam, cams_to_mask, confusion_matrix, miou_from_confusion, evaluate_masks, evaluate_cams
from pot_nb.crf import (crf_inference, crf_inference_label, cams_to_crf_labels, make_pseudo_labels, save_mask_png,
                        CRF_DEFAULTS)


def _edge_scene(seed=0, H=60, W=72):
    "A bright object with a clear edge on a dark background, and a blurred, shifted CAM of it."
    rng = np.random.default_rng(seed)
    truth = np.zeros((H, W), np.int64); truth[12:40, 18:50] = 1
    img = np.where(truth[..., None] == 1, [210, 180, 40], [30, 40, 90]).astype(np.float32)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    cam = ndimage.gaussian_filter(ndimage.shift(truth.astype(np.float32), (4, -3)), 5)
    return img, truth, (cam / cam.max()).astype(np.float32)


def _iou(mask, truth): return miou_from_confusion(confusion_matrix((mask > 0).astype(np.int64), truth, 2))['iou'][1]


def test_crf_sharpens_a_blurry_cam():
    img, truth, cam = _edge_scene()
    before = cams_to_mask(cam[None], [0], 0.5)
    after = crf_inference_label(img, before, 2)
    assert _iou(after, truth) > _iou(before, truth) + 0.1 and _iou(after, truth) > 0.9
    q = crf_inference(img, np.stack([1 - cam, cam]))
    assert q.shape == (2, *truth.shape) and np.allclose(q.sum(0), 1, atol=1e-3)
    assert _iou(q.argmax(0), truth) > _iou(before, truth) + 0.1
    assert _iou(cams_to_crf_labels(img, cam[None], [0], unary='prob'), truth) > _iou(before, truth) + 0.1


def test_crf_matches_pydensecrf_reference():
    "crf_inference_label is IRN's crf_inference_label (pydensecrf's unary_from_labels, same kernels)."
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels
    img, truth, cam = _edge_scene(1)
    labels = cams_to_mask(cam[None], [0], 0.4)
    h, w = labels.shape
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(unary_from_labels(labels, 2, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(img), compat=10)
    ref = np.argmax(np.array(d.inference(10)).reshape(2, h, w), 0)
    np.testing.assert_array_equal(crf_inference_label(img, labels, 2), ref)
    assert CRF_DEFAULTS == dict(gauss_sxy=3, gauss_compat=3, bi_sxy=50, bi_srgb=5, bi_compat=10)


def test_crf_input_errors():
    img, truth, cam = _edge_scene()
    with pytest.raises(ValueError, match='uint8'): crf_inference_label(img.astype(np.float32), truth, 2)
    with pytest.raises(ValueError, match=r'\[0, 2\)'): crf_inference_label(img, truth + 1, 2)
    with pytest.raises(ValueError, match='image size'): crf_inference(img, np.ones((2, 5, 5)))
    with pytest.raises(ValueError, match='image size'): cams_to_crf_labels(img, np.ones((1, 5, 5)), [0])
    with pytest.raises(ValueError, match='bg must be'): cams_to_crf_labels(img, cam[None], [0], bg='otsu')
    with pytest.raises(ValueError, match='conf_bg <= conf_fg'): cams_to_crf_labels(img, cam[None], [0], conf_fg=0.1, conf_bg=0.3)


def test_ignore_band_is_irn():
    "conf_fg/conf_bg reproduce IRN's cam_to_ir_label (without CRF, the band is pure thresholding)."
    rng = np.random.default_rng(0)
    cams, keys = rng.random((2, 20, 25)).astype(np.float32), np.array([3, 9])
    img = rng.integers(0, 255, (20, 25, 3)).astype(np.uint8)
    out = cams_to_crf_labels(img, cams, keys, conf_fg=0.6, conf_bg=0.2, crf=False)
    lut = np.pad(keys + 1, (1, 0))
    fg = lut[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.6), 0)]
    bg = lut[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.2), 0)]
    ref = fg.copy(); ref[fg == 0] = 255; ref[bg + fg == 0] = 0
    np.testing.assert_array_equal(out, ref)
    assert {0, 4, 10, 255} >= set(np.unique(out).tolist())
    with_crf = cams_to_crf_labels(img, cams, keys, conf_fg=0.6, conf_bg=0.2)
    assert set(np.unique(with_crf).tolist()) <= {0, 4, 10, 255}


def test_no_class_image_is_background():
    img = np.zeros((8, 9, 3), np.uint8)
    assert cams_to_crf_labels(img, np.zeros((0, 8, 9)), []).tolist() == np.zeros((8, 9)).tolist()


class _Squares:
    classes = ('red', 'green', 'blue')
    def __init__(self, n=4, size=48, seed=0):
        rng = np.random.default_rng(seed); self.imgs, self.masks = {}, {}
        colours = np.array([[70, 80, 60], [220, 40, 40], [40, 210, 60], [40, 60, 220]], np.float32)
        for i in range(n):
            m = np.zeros((size, size + 8), np.uint8)
            y, x = rng.integers(3, 14, 2); m[y:y + 18, x:x + 18] = 1 + i % 3
            m[30:44, 36:52] = 1 + (i + 1) % 3
            self.imgs[f's{i}'] = np.clip(colours[m] + rng.normal(0, 10, (*m.shape, 3)), 0, 255).astype(np.uint8)
            self.masks[f's{i}'] = m
        self.names = list(self.imgs)
    def read_image(self, name): return self.imgs[name]
    def read_mask(self, name): return self.masks[name]


def _cams(ds, folder):
    for name in ds.names:
        m = ds.read_mask(name); keys = np.unique(m[m > 0]) - 1
        maps = [ndimage.gaussian_filter(ndimage.shift((m == k + 1).astype(np.float32), (2, -2)), 4) for k in keys]
        save_cam(folder/f'{name}.npy', keys, np.stack([c / c.max() for c in maps]))


def test_pseudo_labels_png_palette_values_and_quality(tmp_path):
    ds = _Squares()
    _cams(ds, tmp_path/'cams')
    out = make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'pl', color_dir=tmp_path/'pl_color')
    assert out == tmp_path/'pl' and sorted(p.stem for p in out.glob('*.png')) == ds.names
    import imageio.v2 as imageio
    cv2 = pytest.importorskip('cv2')
    for name in ds.names:
        with Image.open(out/f'{name}.png') as im:                     # greyscale: the value is the class
            assert im.mode == 'L'
            m = np.asarray(im)
        assert m.shape == ds.read_mask(name).shape and set(np.unique(m).tolist()) <= {0, 1, 2, 3}
        # the peers' readers (IRN/SIPE use imageio, many trainers OpenCV) get the same class indices
        np.testing.assert_array_equal(imageio.imread(out/f'{name}.png'), m)
        np.testing.assert_array_equal(cv2.imread(str(out/f'{name}.png'), cv2.IMREAD_UNCHANGED), m)
        with Image.open(tmp_path/'pl_color'/f'{name}.png') as im:     # the optional copy to look at: VOC colours
            assert im.mode == 'P'
            np.testing.assert_array_equal(np.array(im.getpalette()).reshape(-1, 3)[:21], voc_palette(21))
            np.testing.assert_array_equal(np.asarray(im), m)
    r_crf = evaluate_masks(out, ds)['miou']
    raw = make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'raw', crf=False)
    assert evaluate_masks(raw, ds)['miou'] == pytest.approx(evaluate_cams(tmp_path/'cams', ds)['miou'])
    assert r_crf > evaluate_masks(raw, ds)['miou'] + 0.05
    band = make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'band', conf_fg=0.5, conf_bg=0.1)
    vals = set().union(*(np.unique(np.asarray(Image.open(p))).tolist() for p in band.glob('*.png')))
    assert 255 in vals and vals <= {0, 1, 2, 3, 255}
    assert make_pseudo_labels(tmp_path/'cams', ds) == tmp_path/'cams_labels'        # default out_dir beside cam_dir


def test_rerun_writes_nothing_and_temp_files_are_not_done(tmp_path):
    ds = _Squares()
    _cams(ds, tmp_path/'cams')
    out = tmp_path/'pl'
    make_pseudo_labels(tmp_path/'cams', ds, out_dir=out, crf=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob('*.png')}
    make_pseudo_labels(tmp_path/'cams', ds, out_dir=out, crf=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob('*.png')} == stamp
    # an interrupted run: s1's PNG never got its final name, only a half-written temporary file
    (out/'s1.png').unlink()
    (out/'.s1.png.99999.tmp').write_bytes(b'\x89PNG\r\n\x1a\n half')
    make_pseudo_labels(tmp_path/'cams', ds, out_dir=out, crf=False)
    with Image.open(out/'s1.png') as im: assert np.asarray(im).shape == ds.read_mask('s1').shape
    assert not list(out.glob('.*.tmp'))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob('*.png') if p.name != 's1.png'} == \
           {k: v for k, v in stamp.items() if k != 's1.png'}


def test_parallel_jobs_match_serial(tmp_path):
    ds = _Squares(n=5)
    _cams(ds, tmp_path/'cams')
    a = make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'a')
    b = make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'b', n_jobs=2)
    for name in ds.names:
        np.testing.assert_array_equal(np.asarray(Image.open(a/f'{name}.png')), np.asarray(Image.open(b/f'{name}.png')))


def test_missing_cams_and_size_mismatch(tmp_path):
    ds = _Squares()
    _cams(ds, tmp_path/'cams')
    (tmp_path/'cams'/'s2.npy').unlink()
    with pytest.raises(FileNotFoundError, match='s2'): make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'o')
    save_cam(tmp_path/'cams'/'s2.npy', [0], np.zeros((1, 5, 5)))
    with pytest.raises(ValueError, match='s2.npy'): make_pseudo_labels(tmp_path/'cams', ds, out_dir=tmp_path/'o')
    with pytest.raises(ValueError, match=r'\(H, W\)'): save_mask_png(tmp_path/'x.png', np.zeros((2, 2, 3)))


def test_with_a_dataset_folder(tmp_path):
    data = pytest.importorskip('pot_nb.data')
    root = data.make_toy_voc(tmp_path/'toy', n=4, size=48)
    ds = data.load_dataset(root, split='train')
    write_cams_from_masks(ds, tmp_path/'cams', blur=2)
    out = make_pseudo_labels(tmp_path/'cams', root, split='train', out_dir=tmp_path/'pl')
    r = evaluate_masks(out, root, split='train')
    assert r['miou'] > 0.6 and r['n_images'] == len(ds.names)
