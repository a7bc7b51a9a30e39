"pot_nb.data: VOC/COCO/folder readers, label sources and name encodings, bad input, the generators, wsss_dls."
import csv, os, shutil, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from pot_nb.core import VOC_CLASSES, COCO_CLASSES, IGNORE_INDEX
from pot_nb import data as D
from pot_nb.data import (DataError, DataWarning, SegDataset, load_dataset, detect_layout, make_toy_voc,
                         make_fmnist_wsss, write_voc, save_mask, find_fmnist, load_fmnist, irn_encode, wsss_dls,
                         WSSSTrainDataset, WSSSEvalDataset, normalize, denormalize, TOY_CLASSES, FMNIST_CLASSES)

FM = find_fmnist()
needs_fm = pytest.mark.skipif(FM is None, reason='Fashion-MNIST idx files not found: apt-get install '
                                                 'dataset-fashion-mnist, or set FMNIST_DIR to a folder holding them')

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    return make_toy_voc(tmp_path_factory.mktemp('toy')/'toy', n=12, size=48, seed=0)

@pytest.fixture(scope='module')
def fm(tmp_path_factory):
    if FM is None: pytest.skip('Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist or set FMNIST_DIR)')
    return make_fmnist_wsss(tmp_path_factory.mktemp('fm')/'fm', n_train=24, n_val=12, size=96, seed=0)

def _voc_like(toy:Path, dst:Path, keys:str='str', labels:bool=True)->Path:
    "A VOCdevkit/VOC2012 folder with VOC-style names, 20 classes, built from the toy images and masks."
    ds = SegDataset(toy, 'train')
    names = [f'2007_{i:06d}' for i in range(len(ds))]
    imgs = [ds.read_image(n) for n in ds.names]
    masks = [ds.read_mask(n) for n in ds.names]
    root = dst/'VOCdevkit'/'VOC2012'
    write_voc(root, {'train': (names[:8], imgs[:8], masks[:8]), 'val': (names[8:], imgs[8:], masks[8:])},
              VOC_CLASSES, img_format='jpg')
    (root/'classes.txt').unlink()
    lab = np.load(root/'cls_labels.npy', allow_pickle=True).item()
    if keys == 'int': lab = {irn_encode(k): v for k, v in lab.items()}
    if labels: np.save(root/'cls_labels.npy', lab)
    else: (root/'cls_labels.npy').unlink()
    return root

def _write_xml(root:Path, ds:SegDataset):
    (root/'Annotations').mkdir(exist_ok=True)
    for i, n in enumerate(ds.names):
        objs = ''.join(f'<object><name>{ds.classes[c]}</name><difficult>0</difficult></object>'
                       for c in np.nonzero(ds.label(i))[0])
        (root/'Annotations'/f'{n}.xml').write_text(f'<annotation><filename>{n}.jpg</filename>{objs}</annotation>')

# ---------------------------------------------------------------- reading

def test_toy_reader(toy):
    ds = SegDataset(toy, 'train')
    assert (len(ds), ds.classes, ds.n_classes, ds.label_source) == (12, TOY_CLASSES, 3, 'cls_labels')
    it = ds[0]
    assert it['img'].shape == (48, 48, 3) and it['img'].dtype == np.uint8
    assert it['mask'].shape == (48, 48) and it['mask'].dtype == np.uint8
    assert it['label'].dtype == np.float32 and it['label'].shape == (3,)
    masks = np.stack([ds.read_mask(n) for n in ds.names])
    assert set(np.unique(masks)) <= {0, 1, 2, 3, IGNORE_INDEX}
    assert (masks == IGNORE_INDEX).any(), 'the outline band must use 255 = ignore'
    assert ds.has_masks and len(SegDataset(toy, 'val')) == 6
    for i in range(len(ds)): np.testing.assert_array_equal(ds.label(i), D.mask_labels(ds.read_mask(ds.names[i]), 3))

@pytest.mark.parametrize('keys', ['str', 'int'])
def test_voc_cls_labels_both_name_encodings(toy, tmp_path, keys):
    root = _voc_like(toy, tmp_path, keys)
    for src in (tmp_path, tmp_path/'VOCdevkit', root):            # parent of VOCdevkit, VOCdevkit, VOC2012
        ds = load_dataset(src, 'train')
        assert ds.root == root and ds.classes == VOC_CLASSES and ds.label_source == 'cls_labels'
        assert ds.labels.shape == (8, 20)
    masks = SegDataset(root, 'train', label_source='masks')
    np.testing.assert_array_equal(ds.labels, masks.labels)
    assert ds.image_path(ds.names[0]).suffix == '.jpg'

def test_label_sources_xml_and_auto(toy, tmp_path):
    root = _voc_like(toy, tmp_path, labels=False)
    ref = SegDataset(root, 'train', label_source='masks')
    assert SegDataset(root, 'train').label_source == 'masks'        # no cls_labels.npy: masks
    _write_xml(root, ref)
    xml = SegDataset(root, 'train', label_source='xml')
    np.testing.assert_array_equal(xml.labels, ref.labels)
    shutil.rmtree(root/'SegmentationClass')
    auto = SegDataset(root, 'train')                                # no masks either: the XML files
    assert auto.label_source == 'xml' and auto[0]['mask'] is None and not auto.has_masks
    np.testing.assert_array_equal(auto.labels, ref.labels)
    (root/'Annotations'/f'{ref.names[2]}.xml').write_text('<annotation><object><name>unicorn</name></object></annotation>')
    with pytest.raises(DataError, match=f"{ref.names[2]}.xml: object name 'unicorn' is not one of the 20 classes"):
        SegDataset(root, 'train', label_source='xml').label(2)

def test_split_file_places_and_mask_dir(toy, tmp_path):
    root = Path(shutil.copytree(toy, tmp_path/'t'))
    names = (root/'ImageSets/Segmentation/train.txt').read_text().split()
    (root/'ImageSets/SegmentationAug').mkdir()
    (root/'ImageSets/SegmentationAug/train_aug.txt').write_text(
        ''.join(f'/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n' for n in names[:5]))
    ds = SegDataset(root, 'train_aug')
    assert ds.names == names[:5] and ds.split_file.parent.name == 'SegmentationAug'
    shutil.copytree(root/'SegmentationClass', root/'SegmentationClassAug')
    save_mask(root/'SegmentationClassAug'/f'{names[0]}.png', np.zeros((48, 48), np.uint8))
    assert SegDataset(root, 'train_aug', label_source='masks').mask_dir.name == 'SegmentationClassAug'
    assert SegDataset(root, 'train_aug', label_source='masks').label(0).sum() == 0
    assert SegDataset(root, 'train_aug', mask_dir='SegmentationClass').mask_dir.name == 'SegmentationClass'

def _coco(tmp_path:Path, split_file:bool)->Path:
    root = tmp_path/'coco'
    rng = np.random.default_rng(0)
    names = {'train': ['COCO_train2014_000000000009', 'COCO_train2014_000000000025'],
             'val': ['COCO_val2014_000000000042']}
    for split, ns in names.items():
        for d in ('JPEGImages', 'SegmentationClass'): (root/d/f'{split}2014').mkdir(parents=True, exist_ok=True)
        for k, n in enumerate(ns):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root/'JPEGImages'/f'{split}2014'/f'{n}.jpg')
            m = np.zeros((30, 40), np.uint8); m[5:15, 5:15] = 80; m[20:, 30:] = 1 + k; m[15, :] = 255
            save_mask(root/'SegmentationClass'/f'{split}2014'/f'{n}.png', m)
        if split_file:
            (root/'ImageSets/Segmentation').mkdir(parents=True, exist_ok=True)
            (root/'ImageSets/Segmentation'/f'{split}.txt').write_text('\n'.join(ns[:1]) + '\n')
    return root

@pytest.mark.parametrize('split_file', [False, True])
def test_coco_layout(tmp_path, split_file):
    root = _coco(tmp_path, split_file)
    assert detect_layout(root) == ('coco', root)
    ds = load_dataset(root, 'train')
    assert ds.classes == COCO_CLASSES and ds.n_classes == 80 and ds.label_source == 'masks'
    assert len(ds) == (1 if split_file else 2) and ds.names[0] == 'COCO_train2014_000000000009'
    it = ds[0]
    assert it['img'].shape == (30, 40, 3) and it['mask'].shape == (30, 40)
    assert np.nonzero(it['label'])[0].tolist() == [0, 79]                     # person (1) and toothbrush (80)
    assert len(load_dataset(root, 'val')) == 1
    # a cls_labels.npy keyed by COCO image id is accepted too
    np.save(root/'cls_labels.npy', {9: np.eye(80, dtype=np.float32)[3], 25: np.eye(80, dtype=np.float32)[4]})
    assert load_dataset(root, 'train').label(0).argmax() == 3

def test_load_dataset_dispatch(toy, tmp_path, monkeypatch):
    assert detect_layout(toy) == ('folder', toy)
    assert load_dataset(toy, 'val').classes == TOY_CLASSES
    with pytest.raises(DataError, match='not a dataset folder'): load_dataset(tmp_path)
    with pytest.raises(DataError, match='nowhere: dataset root not found'): load_dataset(tmp_path/'nowhere')
    monkeypatch.setenv('POT_NB_CACHE', str(tmp_path/'cache'))
    monkeypatch.chdir(tmp_path)
    ds = load_dataset('toy', 'val')
    assert ds.root == tmp_path/'cache'/'toy' and ds.classes == TOY_CLASSES

# ---------------------------------------------------------------- bad input

def _copy(toy, tmp_path)->Path: return Path(shutil.copytree(toy, tmp_path/'bad'))

def _skip(root, n_bad, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ds = SegDataset(root, on_error='skip', **kw)
    w = [x for x in w if issubclass(x.category, DataWarning)]
    assert len(w) == 1 and f'skipped {n_bad} of 12 items' in str(w[0].message)
    assert len(ds) == 12 - n_bad and len(ds.skipped) == n_bad
    return ds

def test_missing_root_and_split(toy, tmp_path):
    with pytest.raises(DataError, match='nope: dataset root not found'): SegDataset(tmp_path/'nope')
    with pytest.raises(DataError, match=r'ImageSets/Segmentation/test\.txt: split file .* not found'): SegDataset(toy, 'test')

def test_missing_image(toy, tmp_path):
    root = _copy(toy, tmp_path)
    (root/'JPEGImages/toy_train_0003.png').unlink(); (root/'JPEGImages/toy_train_0005.png').unlink()
    with pytest.raises(DataError, match=r'JPEGImages/toy_train_0003\.jpg: image not found.*and 1 more bad items'):
        SegDataset(root)
    ds = _skip(root, 2)
    assert set(ds.skipped) == {'toy_train_0003', 'toy_train_0005'} and 'image not found' in ds.skipped['toy_train_0005']

def test_corrupt_image(toy, tmp_path):
    root = _copy(toy, tmp_path)
    p = root/'JPEGImages/toy_train_0004.png'
    p.write_bytes(p.read_bytes()[:60])                                            # truncated
    ds = SegDataset(root)                                                         # construction only checks existence
    with pytest.raises(DataError, match=r'toy_train_0004\.png: cannot read image'): ds[4]
    with pytest.raises(DataError, match=r'toy_train_0004\.png: cannot read image'): SegDataset(root, validate=True)
    ds = _skip(root, 1, validate=True)
    assert 'cannot read image' in ds.skipped['toy_train_0004']
    lazy = SegDataset(root, on_error='skip')                                      # without validate: at first read
    with pytest.warns(DataWarning, match='skipped 1 of 12'): it = lazy[4]
    assert it['name'] == 'toy_train_0005' and list(lazy.skipped) == ['toy_train_0004']

def test_mask_value_out_of_range(toy, tmp_path):
    root = _copy(toy, tmp_path)
    m = np.zeros((48, 48), np.uint8); m[3, 3] = 9; m[4, 4] = 255
    save_mask(root/'SegmentationClass/toy_train_0002.png', m)
    ds = SegDataset(root)
    with pytest.raises(DataError, match=r'toy_train_0002\.png: mask value 9 exceeds the class count'): ds[2]
    with pytest.raises(DataError, match='mask value 9 exceeds'): SegDataset(root, label_source='masks').label(2)
    assert 'exceeds the class count' in _skip(root, 1, validate=True).skipped['toy_train_0002']

def test_mask_size_mismatch(toy, tmp_path):
    root = _copy(toy, tmp_path)
    save_mask(root/'SegmentationClass/toy_train_0001.png', np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r'toy_train_0001\.png: mask size 10x10 differs from the image size 48x48'):
        SegDataset(root)[1]

def test_wrong_label_length_and_missing_label(toy, tmp_path):
    root = _copy(toy, tmp_path)
    lab = np.load(root/'cls_labels.npy', allow_pickle=True).item()
    lab['toy_train_0007'] = np.zeros(5, np.float32); del lab['toy_train_0008']
    np.save(root/'cls_labels.npy', lab)
    with pytest.raises(DataError, match=r"cls_labels\.npy: label of 'toy_train_0007' has length 5, expected 3"):
        SegDataset(root)
    ds = _skip(root, 2)
    assert 'no label for image' in ds.skipped['toy_train_0008']

def test_bad_split_names_a_missing_mask(toy, tmp_path):
    root = _copy(toy, tmp_path)
    (root/'SegmentationClass/toy_train_0000.png').unlink()
    with pytest.raises(DataError, match=r'SegmentationClass/toy_train_0000\.png: mask not found'):
        SegDataset(root, label_source='masks')
    assert SegDataset(root)[0]['mask'] is None                                     # labels from cls_labels: fine

# ---------------------------------------------------------------- generators

def _arrays(root:Path):
    return {p.name: (np.asarray(Image.open(p)) if p.suffix in ('.png', '.jpg') else p.read_bytes())
            for p in sorted(root.rglob('*')) if p.is_file() and p.name != 'meta.json'}

def test_toy_deterministic_and_cached(tmp_path):
    a, b, c = (make_toy_voc(tmp_path/n, n=6, size=32, seed=s) for n, s in (('a', 3), ('b', 3), ('c', 4)))
    A, B, C = _arrays(a), _arrays(b), _arrays(c)
    assert A.keys() == B.keys() and all(np.array_equal(A[k], B[k]) for k in A)
    assert any(not np.array_equal(A[k], C[k]) for k in A if k.endswith('.png'))
    t = (a/'meta.json').stat().st_mtime_ns
    assert make_toy_voc(a, n=6, size=32, seed=3) == a and (a/'meta.json').stat().st_mtime_ns == t
    make_toy_voc(a, n=4, size=32, seed=3)                                          # other parameters: rebuilt
    assert len(SegDataset(a)) == 4 and not list(tmp_path.glob('.a.*'))           # no temp folders left
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'x.txt').write_text('user data')
    with pytest.raises(DataError, match='mine: folder exists and was not written by pot_nb'): make_toy_voc(tmp_path/'mine')

@needs_fm
def test_fmnist_deterministic(tmp_path):
    kw = dict(n_train=10, n_val=4, size=64)
    a, b, c = make_fmnist_wsss(tmp_path/'a', seed=1, **kw), make_fmnist_wsss(tmp_path/'b', seed=1, **kw), make_fmnist_wsss(tmp_path/'c', seed=2, **kw)
    A, B, C = _arrays(a), _arrays(b), _arrays(c)
    assert A.keys() == B.keys() and all(np.array_equal(A[k], B[k]) for k in A)
    assert sum(not np.array_equal(A[k], C[k]) for k in A if k.endswith('.jpg')) == 14

@needs_fm
def test_fmnist_dataset(fm):
    tr, va = load_dataset(fm, 'train'), load_dataset(fm, 'val')
    assert (len(tr), len(va), tr.classes, tr.n_classes) == (24, 12, FMNIST_CLASSES, 10)
    it = tr[0]
    assert it['img'].shape == (96, 96, 3) and it['mask'].shape == (96, 96)
    assert set(np.unique(np.stack([tr.read_mask(n) for n in tr.names]))) <= set(range(11)) | {IGNORE_INDEX}
    for ds in (tr, va):                                                            # labels = classes visible in the masks
        np.testing.assert_array_equal(ds.labels, SegDataset(fm, ds.split, label_source='masks').labels)
        assert ds.labels.sum(1).min() >= 1 and ds.labels.sum(1).max() <= 3
    rows = list(csv.DictReader(open(fm/'items.csv')))
    assert {r['source_split'] for r in rows if r['split'] == 'val'} == {'test'}
    assert {r['source_split'] for r in rows if r['split'] == 'train'} == {'train'}
    xte, yte = load_fmnist('test')
    for r in rows:
        assert int(r['visible_px']) >= 0.01 * 96 * 96
        if r['split'] == 'val': assert int(r['source_index']) < len(xte) and yte[int(r['source_index'])] == int(r['class'])
    for ds in (tr, va):                                                            # items.csv agrees with the labels
        for i, n in enumerate(ds.names):
            assert sorted({int(r['class']) for r in rows if r['name'] == n}) == np.nonzero(ds.label(i))[0].tolist()
    meta = (fm/'meta.json').read_text()
    assert '"n_train": 24' in meta and '"generator": "make_fmnist_wsss"' in meta

def test_fmnist_missing_says_what_to_install(tmp_path, monkeypatch):
    import pot_nb.synthetic as S                                          # where the finder reads it
    monkeypatch.setattr(S, 'DEBIAN_FMNIST_DIR', tmp_path/'none')
    monkeypatch.setenv('FMNIST_DIR', str(tmp_path/'none'))
    monkeypatch.setenv('POT_NB_CACHE', str(tmp_path/'cache'))
    assert find_fmnist() is None
    with pytest.raises(DataError, match='apt-get install dataset-fashion-mnist'): load_fmnist('train', download=False)
    with pytest.raises(DataError, match=r'empty: Fashion-MNIST files missing: train-images-idx3-ubyte\.gz'):
        (tmp_path/'empty').mkdir(); find_fmnist(tmp_path/'empty')

# ---------------------------------------------------------------- normalisation and loaders

def test_normalize_roundtrip():
    x = torch.randint(0, 256, (2, 3, 7, 5), dtype=torch.uint8)
    for norm in ('imagenet', 'lite0', ((10., 20., 30.), (2., 3., 4.))):
        assert torch.equal(denormalize(normalize(x, norm), norm), x)
    with pytest.raises(ValueError, match='expected a'): normalize(torch.zeros(4, 5, 5))

def test_wsss_dls_batches(toy):
    dls = wsss_dls(toy, bs=4, size=40, device='cpu', seed=0)
    x, y, v = dls.train.one_batch()
    assert (x.shape, y.shape, v.shape) == ((4, 3, 40, 40), (4, 3), (4, 40, 40))
    assert (x.dtype, y.dtype, v.dtype) == (torch.float32, torch.float32, torch.bool)
    assert x.masked_select(~v[:, None]).abs().sum() == 0                          # padding is 0 after normalisation
    assert set(y.unique().tolist()) <= {0., 1.}
    xv, yv, mv = dls.valid.one_batch()
    assert (xv.shape, yv.shape, mv.shape, mv.dtype) == ((4, 3, 40, 40), (4, 3), (4, 40, 40), torch.int64)
    assert set(mv.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert (dls.n_inp, dls.n_classes, dls.classes, dls.norm, len(dls.train), len(dls.valid)) == (1, 3, TOY_CLASSES, 'imagenet', 3, 2)
    # toy images are 48 px: the 40 px validation images are resized, padding appears only with a non-square image

def test_wsss_dls_padding_and_determinism(toy):
    dls = wsss_dls(toy, bs=4, size=64, device='cpu', seed=5, scale=(0.5, 0.6))   # images smaller than the crop
    x, y, v = dls.train.one_batch()
    assert (~v).any() and v.sum(dim=(1, 2)).max() <= 39 * 39
    x2, y2, v2 = wsss_dls(toy, bs=4, size=64, device='cpu', seed=5, scale=(0.5, 0.6)).train.one_batch()
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(v, v2)
    x3, _, _ = dls.train.one_batch()                                               # next epoch: new draws
    assert not torch.equal(x, x3)
    xv, yv, mv = dls.valid.one_batch()
    assert (mv == IGNORE_INDEX).sum() > 0 and mv.shape == (4, 64, 64)
    # a rectangular image: the validation pad (bottom/right) is 255 and 0
    ds = SegDataset(toy, 'val')
    rect = WSSSEvalDataset(ds, size=64)
    class _Rect:                                                                  # a 48x24 view of the toy data
        def __init__(s, ds): s.ds = ds
        def __len__(s): return len(s.ds)
        def __getitem__(s, i):
            it = dict(s.ds[i]); it['img'], it['mask'] = it['img'][:, :24], it['mask'][:, :24]; return it
    rect.ds = _Rect(ds)
    xr, yr, mr = rect[0]
    assert (mr[:, 32:] == IGNORE_INDEX).all() and (xr[:, :, 32:] == 0).all() and (mr[:, :32] != IGNORE_INDEX).any()

def test_plain_torch_loader(toy):
    tds = WSSSTrainDataset(SegDataset(toy), size=32, seed=0)
    x, y, v = next(iter(torch.utils.data.DataLoader(tds, batch_size=3)))
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 3) and v.dtype == torch.bool
    tds.set_epoch(0); a = tds[1][0]; tds.set_epoch(0); assert torch.equal(a, tds[1][0])

@needs_fm
def test_wsss_dls_fmnist_with_workers(fm):
    dls = wsss_dls(fm, bs=6, size=64, device='cpu', num_workers=2, n_valid=5, seed=1)
    x, y, v = dls.train.one_batch()
    assert x.shape == (6, 3, 64, 64) and y.shape == (6, 10) and (y.sum(1) >= 1).all()
    x0, y0, v0 = wsss_dls(fm, bs=6, size=64, device='cpu', num_workers=0, n_valid=5, seed=1).train.one_batch()
    assert torch.equal(x, x0) and torch.equal(y, y0)                               # workers do not change the draw
    assert len(dls.valid_ds) == 5 and dls.valid.one_batch()[2].shape == (5, 64, 64)
