"Real photos: the quokka outline mask, IoU at the best threshold, and photo_prototype_cams on a small photo."
import json
import numpy as np
import pytest
from pot_nb.studies.photos import (PHOTOS, skimage_photo, imgaug_dir, polygon_mask, load_quokka, best_threshold_iou,
                           photo_prototype_cams, stage_feature)


def test_polygon_mask_square_and_triangle():
    sq = polygon_mask(np.array([[2, 3], [12, 3], [12, 8], [2, 8]]), (20, 30))      # x 2..12, y 3..8
    ys, xs = np.nonzero(sq)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 12, 3, 8)
    tri = polygon_mask(np.array([[0, 0], [40, 0], [0, 40]]), (41, 41))
    assert abs(tri.sum() - 40 * 40 / 2) < 80                                        # area of the triangle (+ its edge pixels)
    assert tri[2, 2] and not tri[38, 38]
    with pytest.raises(ValueError, match='polygon'): polygon_mask(np.zeros((2, 2)), (5, 5))


def test_quokka_mask():
    q = load_quokka()
    H, W = q['img'].shape[:2]
    assert q['img'].dtype == np.uint8 and q['mask'].shape == (H, W) == (643, 960)
    ys, xs = np.nonzero(q['mask'])
    x1, y1, x2, y2 = q['bbox']
    assert x1 - 8 <= xs.min() <= x1 + 8 and x2 - 8 <= xs.max() <= x2 + 8
    assert y1 - 8 <= ys.min() <= y1 + 8 and y2 - 8 <= ys.max() <= y2 + 8
    # the rasterised area equals the shoelace area of the polygon
    x, y = q['polygon'].T
    shoelace = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert q['mask'].sum() == pytest.approx(shoelace, rel=0.02)
    assert 0.2 < q['mask'].mean() < 0.5


def test_quokka_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='quokka.jpg'): load_quokka(tmp_path)
    (tmp_path/'quokka.jpg').write_bytes((imgaug_dir()/'quokka.jpg').read_bytes())
    (tmp_path/'quokka_annotations.json').write_text(json.dumps({'polygons': []}))
    with pytest.raises(ValueError, match='quokka_annotations.json'): load_quokka(tmp_path)


def test_best_threshold_iou():
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    disc = r < 16
    res = best_threshold_iou(np.clip(1 - r / 32, 0, 1), disc)
    assert res['iou'] > 0.98 and abs(res['threshold'] - 0.5) <= 0.051
    assert len(res['ious']) == len(res['thresholds']) == 19 and res['ious'].max() == res['iou']
    half = np.where(disc & (xx < 32), 1.0, 0.0)
    assert best_threshold_iou(half, disc)['iou'] == pytest.approx(0.5, abs=0.02)
    # a map that is high only outside the object overlaps it at no threshold
    assert best_threshold_iou(1 - disc.astype(float), disc)['iou'] == 0
    one = best_threshold_iou(np.full((4, 4), 0.7), np.ones((4, 4), bool), thresholds=[0.5, 0.8])
    assert (one['iou'], one['threshold']) == (1.0, 0.5)
    with pytest.raises(ValueError, match='differ'): best_threshold_iou(np.zeros((3, 3)), np.zeros((3, 4), bool))


def test_skimage_photos():
    for n in PHOTOS:
        im = skimage_photo(n)
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 and min(im.shape[:2]) >= 256
    with pytest.raises(ValueError, match='unknown photo'): skimage_photo('camera')


def test_photo_prototype_cams_small():
    img = skimage_photo('coffee')                        # (400, 600, 3)
    r = photo_prototype_cams(img, long=96, n_clusters=2)
    assert r['cls'].shape == r['proto'].shape == img.shape[:2]
    assert r['grid'] == (4, 6) and r['cls_grid'].shape == r['proto_grid'].shape == (4, 6)
    for k in ('cls', 'proto'): assert r[k].min() >= 0 and r[k].max() <= 1 and r[k].max() > 0.5
    assert r['feat_dim'] == 24 + 40 + 112 + 320 and 0 < r['prob'] <= 1 and 0 <= r['class_idx'] < 1000
    assert r['q'].shape == (2, 24, 2) and list(r['groups'][:, 1]) == [0, 1]     # background and class groups
    rows = r['q'].sum(-1)                                                         # a group with prototypes: rows sum to 1
    assert np.allclose(rows[1], 1, atol=1e-4) and all(np.allclose(s, 1, atol=1e-4) or np.all(s == 0) for s in rows)
    assert r['counts'].shape == (2, 2) and r['counts'].sum() == 24                 # every cell is a seed of one side
    assert set(np.unique(r['seeds'])) <= {0, 1} and r['assign'].shape == (2, 4, 6)
    r2 = photo_prototype_cams(img, class_idx=967, long=96, n_clusters=2)          # 967: espresso, asked for
    assert r2['class_idx'] == 967 and r2['name'] == 'espresso'
    with pytest.raises(ValueError, match='class_idx'): photo_prototype_cams(img, class_idx=1000, long=64)
    with pytest.raises(ValueError, match='uint8'): photo_prototype_cams(img.astype(np.float32), long=64)


def test_stage_feature_unit_norm_per_stage():
    import torch
    from pot_nb.studies.photos import imagenet_lite0
    m = imagenet_lite0(16)
    x = torch.randn(1, 3, 64, 96)
    for center in (False, True):
        f = stage_feature(m, x, (4, 6), center=center)
        assert f.shape == (1, 496, 4, 6)
        for s in f.split([24, 40, 112, 320], 1): assert torch.allclose(s.norm(dim=1), torch.ones(1, 4, 6), atol=1e-4)
    fc = stage_feature(m, x, (4, 6), center=True)
    assert fc[:, :24].mean((2, 3)).abs().max() < 0.5                              # centred: no large common direction
