"Evaluation protocol: confusion matrices against scikit-learn, mIoU rules, the one-pass threshold sweep, CAM files."
import numpy as np
import pytest
from conftest import write_cams_from_masks
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion
from pot_nb.evaluate import (confusion_matrix, ConfusionMeter, miou_from_confusion, cams_to_mask, save_cam, load_cam,
                             evaluate_cams, evaluate_masks, format_results, DEFAULT_THRESHOLDS)

pytestmark = pytest.mark.filterwarnings('ignore:A single label')  # sklearn, when a random case has one class


def _random_labels(rng, n, shape, p_ignore=0.1):
    g = rng.integers(0, n, shape); g[rng.random(shape) < p_ignore] = 255
    return g, rng.integers(0, n, shape)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25), st.integers(1, 60), st.floats(0, 0.9), st.integers(0, 2**32 - 1))
def test_confusion_matches_sklearn(n, size, p_ignore, seed):
    rng = np.random.default_rng(seed)
    g, p = _random_labels(rng, n, (size, 7), p_ignore)
    keep = g != 255
    ref = sk_confusion(g[keep], p[keep], labels=range(n)) if keep.any() else np.zeros((n, n), np.int64)  # sklearn rejects empty input
    np.testing.assert_array_equal(confusion_matrix(p, g, n), ref)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(p), torch.from_numpy(g), n).numpy(), ref)
    np.testing.assert_array_equal(confusion_matrix(p.astype(np.uint8), g.astype(np.uint8), n), ref)


def test_miou_against_sklearn_jaccard():
    from sklearn.metrics import jaccard_score
    rng = np.random.default_rng(1)
    meter = ConfusionMeter(6)
    gs, ps = [], []
    for _ in range(5):                                   # dataset-level: accumulate, then one IoU
        g, p = _random_labels(rng, 6, (20, 30)); meter.update(p, g); gs.append(g.ravel()); ps.append(p.ravel())
    g, p = np.concatenate(gs), np.concatenate(ps)
    keep = g != 255
    ref = jaccard_score(g[keep], p[keep], labels=range(6), average=None)
    r = meter.result()
    np.testing.assert_allclose(r['iou'], ref)
    assert r['miou'] == pytest.approx(ref.mean())
    np.testing.assert_allclose(r['recall'], np.diag(meter.conf) / meter.conf.sum(1))


def test_miou_excludes_absent_classes_only():
    conf = np.zeros((4, 4), np.int64)
    conf[0, 0], conf[1, 1], conf[1, 0] = 10, 5, 5          # class 2 nowhere, class 3 predicted only
    conf[0, 3] = 2
    r = miou_from_confusion(conf)
    assert np.isnan(r['iou'][2]) and r['iou'][3] == 0
    assert r['miou'] == pytest.approx(np.mean([10 / 17, 5 / 10, 0]))
    assert list(r['present']) == [True, True, False, True]
    assert np.isnan(miou_from_confusion(np.zeros((3, 3)))['miou'])


def test_confusion_errors():
    with pytest.raises(ValueError, match='differs'): confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match=r'\[0, 3\)'): confusion_matrix(np.full((2, 2), 7), np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match='merge'): ConfusionMeter(3).merge(ConfusionMeter(4))
    # all pixels ignored: an empty matrix, no error
    assert confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 255), 3).sum() == 0


def test_meter_merge_equals_one_meter():
    rng = np.random.default_rng(2)
    data = [_random_labels(rng, 5, (10, 10)) for _ in range(6)]
    a, b, whole = ConfusionMeter(5), ConfusionMeter(5), ConfusionMeter(5)
    for i, (g, p) in enumerate(data): (a if i % 2 else b).update(p, g); whole.update(p, g)
    np.testing.assert_array_equal(a.merge(b).conf, whole.conf)


def test_cams_to_mask_irn_semantics():
    rng = np.random.default_rng(3)
    cams, keys = rng.random((3, 9, 11)).astype(np.float32), np.array([2, 5, 19])
    # IRN: pad a constant background score in front, argmax, map through (0, keys + 1)
    ref = np.pad(keys + 1, (1, 0))[np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.3), 0)]
    np.testing.assert_array_equal(cams_to_mask(cams, keys, 0.3), ref)
    one_max = np.pad(keys + 1, (1, 0))[np.argmax(np.concatenate([1 - cams.max(0, keepdims=True), cams]), 0)]
    np.testing.assert_array_equal(cams_to_mask(cams, keys), one_max)
    np.testing.assert_array_equal(cams_to_mask(torch.from_numpy(cams), torch.from_numpy(keys)).numpy(), one_max)
    bgmap = rng.random((9, 11)).astype(np.float32)
    np.testing.assert_array_equal(cams_to_mask(cams, keys, bgmap),
                                  np.pad(keys + 1, (1, 0))[np.argmax(np.concatenate([bgmap[None], cams]), 0)])
    with pytest.raises(ValueError, match='background map'): cams_to_mask(cams, keys, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r'\(K, H, W\)'): cams_to_mask(cams[0], keys)


class _Source:
    "Random ground truth with ignore pixels, C = 4 foreground classes."
    classes = ('a', 'b', 'c', 'd')
    def __init__(self, n=5, seed=0):
        rng = np.random.default_rng(seed)
        self.masks = {}
        for i in range(n):
            m = rng.integers(0, 5, (12 + i, 15)).astype(np.uint8); m[rng.random(m.shape) < 0.1] = 255
            self.masks[f'im{i}'] = m
        self.names = list(self.masks)
    def read_mask(self, name): return self.masks[name]


def _write_cams(ds, folder, seed=0, with_bg=False):
    rng = np.random.default_rng(seed)
    for name in ds.names:
        h, w = ds.read_mask(name).shape
        keys = np.sort(rng.choice(4, rng.integers(0, 4), replace=False))      # sometimes no class at all
        extra = dict(bg=rng.random((h, w)).astype(np.float32)) if with_bg else {}
        save_cam(folder/f'{name}.npy', keys, rng.random((len(keys), h, w)).astype(np.float32), **extra)


def test_evaluate_cams_sweep_equals_slow_loop(tmp_path):
    ds = _Source()
    _write_cams(ds, tmp_path, with_bg=True)
    ts = [0.0, 0.1, 0.33, 0.5, 0.9, 1.0]
    for bg in ('1-max', 0.25, 'map'):
        res = evaluate_cams(tmp_path, ds, bg=bg, thresholds=ts)
        for t, miou in zip(res['sweep'].threshold, res['sweep'].miou):
            meter = ConfusionMeter(5)
            for name in ds.names:
                d = load_cam(tmp_path/f'{name}.npy'); meter.update(cams_to_mask(d['high_res'], d['keys'], float(t)), ds.read_mask(name))
            assert miou == pytest.approx(meter.result()['miou'], abs=1e-12)
        meter = ConfusionMeter(5)
        for name in ds.names:
            d = load_cam(tmp_path/f'{name}.npy')
            b = None if bg == '1-max' else (d['bg'] if bg == 'map' else bg)
            meter.update(cams_to_mask(d['high_res'], d['keys'], b), ds.read_mask(name))
        np.testing.assert_array_equal(res['conf'], meter.conf)
        assert res['miou'] == pytest.approx(meter.result()['miou'])
        assert list(res['iou']) == ['background', 'a', 'b', 'c', 'd'] and res['n_images'] == 5
        assert res['best_miou'] == pytest.approx(max(res['sweep'].miou))
    assert len(evaluate_cams(tmp_path, ds)['sweep']) == len(DEFAULT_THRESHOLDS)
    r = evaluate_cams(tmp_path, ds, thresholds=[], n_images=2)
    assert r['n_images'] == 2 and 'best_threshold' not in r and len(r['sweep']) == 0


def test_evaluate_cams_errors(tmp_path):
    ds = _Source()
    _write_cams(ds, tmp_path)
    (tmp_path/'im3.npy').unlink()
    with pytest.raises(FileNotFoundError, match="im3"): evaluate_cams(tmp_path, ds)
    save_cam(tmp_path/'im3.npy', [1], np.zeros((1, 4, 4)))                  # wrong size
    with pytest.raises(ValueError, match='im3.npy'): evaluate_cams(tmp_path, ds)
    (tmp_path/'im3.npy').write_bytes(b'\x93NUMPY garbage')                  # corrupt
    with pytest.raises(ValueError, match='im3.npy: corrupt or partial'): evaluate_cams(tmp_path, ds)
    _write_cams(ds, tmp_path)
    with pytest.raises(ValueError, match="no 'bg' map"): evaluate_cams(tmp_path, ds, bg='map')
    with pytest.raises(ValueError, match='bg must be'): evaluate_cams(tmp_path, ds, bg='otsu')
    ds.masks['im2'] = None                                                    # a split without ground truth
    with pytest.raises(ValueError, match='im2: no ground-truth mask'): evaluate_cams(tmp_path, ds)


def test_load_cam_reads_irn_style_files(tmp_path):
    "IRN/SIPE write np.save(path, dict) without our writer: those files load too."
    np.save(tmp_path/'x.npy', {'keys': np.array([3]), 'high_res': np.ones((1, 5, 6)), 'cam': np.ones((1, 2, 2))})
    d = load_cam(tmp_path/'x.npy')
    assert d['keys'].dtype == np.int64 and d['high_res'].dtype == np.float32 and 'cam' in d
    np.save(tmp_path/'y.npy', {'keys': np.array([3, 4]), 'high_res': np.ones((1, 5, 6))})
    with pytest.raises(ValueError, match='y.npy: high_res has shape'): load_cam(tmp_path/'y.npy')
    np.save(tmp_path/'z.npy', np.zeros(3))
    with pytest.raises(ValueError, match='z.npy: expected a pickled dict'): load_cam(tmp_path/'z.npy')
    with pytest.raises(ValueError, match='high_res must be'): save_cam(tmp_path/'w.npy', [1, 2], np.zeros((1, 3, 3)))
    assert not list(tmp_path.glob('.*.tmp'))


def test_evaluate_masks_and_coverage(tmp_path):
    ds = _Source()
    rng = np.random.default_rng(5)
    meter = ConfusionMeter(5)
    for name in ds.names:
        gt = ds.read_mask(name)
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 5, gt.shape)).astype(np.uint8)
        pred[pred == 255] = 0
        pred[:2] = 255                                                      # an unlabelled band
        Image.fromarray(pred).save(tmp_path/f'{name}.png')
        meter.update(pred, gt)
    r = evaluate_masks(tmp_path, ds)
    assert r['miou'] == pytest.approx(meter.result()['miou'])
    labelled = sum((m != 255).sum() for m in ds.masks.values())
    uncovered = sum((m[:2] != 255).sum() for m in ds.masks.values())
    assert r['coverage'] == pytest.approx(1 - uncovered / labelled)
    Image.fromarray(np.full((12, 15), 9, np.uint8)).save(tmp_path/'im0.png')
    with pytest.raises(ValueError, match='im0.png'): evaluate_masks(tmp_path, ds)
    txt = format_results(r, 'masks')
    assert 'coverage' in txt and 'mIoU' in txt


def test_end_to_end_with_a_dataset_folder(tmp_path):
    "source given as a folder: pot_nb.data.load_dataset reads the split; perfect CAMs score 100%."
    data = pytest.importorskip('pot_nb.data')
    root = data.make_toy_voc(tmp_path/'toy', n=6, size=48)
    ds = data.load_dataset(root, split='train')
    write_cams_from_masks(ds, tmp_path/'cams')
    r = evaluate_cams(tmp_path/'cams', root, split='train')
    assert r['miou'] == pytest.approx(1.0)
    assert list(r['iou']) == ['background', *ds.classes]
    assert 'mIoU' in format_results(r)
