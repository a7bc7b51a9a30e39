"""Fuzzing the image and mask readers: random bytes, random headers and random arrays of any shape and dtype give
either a well-formed array or `DataError` naming the file, never another exception."""
import io, warnings
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra import numpy as hnp
from PIL import Image
from pot_nb.data import load_image, load_mask, DataError, SegDataset, make_toy_voc

HEADERS = [b'', b'\x89PNG\r\n\x1a\n', b'\xff\xd8\xff\xe0', b'GIF89a', b'BM', b'II*\x00', b'RIFF\x00\x00\x00\x00WEBP']

def _check(path, reader, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # PIL's DecompressionBombWarning and friends are fine
        try: out = reader(path, **kw)
        except DataError as e:
            assert str(path) in str(e)
            return None
    return out

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from(HEADERS), body=st.binary(max_size=400))
def test_random_bytes(tmp_path, head, body):
    p = tmp_path/'x.png'; p.write_bytes(head + body)
    img = _check(p, load_image)
    if img is not None: assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    m = _check(p, load_mask, n_classes=20)
    if m is not None: assert m.dtype == np.uint8 and m.ndim == 2

def _encode(a:np.ndarray, fmt:str)->bytes|None:
    "The array written by PIL in `fmt`, or None when PIL cannot write it so."
    try:
        b = io.BytesIO(); Image.fromarray(a).save(b, format=fmt); return b.getvalue()
    except Exception: return None

dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.bool_])
shapes = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9),
                   st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 3, 4])))

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=shapes.flatmap(lambda s: dtypes.flatmap(lambda d: hnp.arrays(d, s))), fmt=st.sampled_from(['PNG', 'TIFF', 'BMP', 'JPEG']),
       cut=st.one_of(st.none(), st.integers(0, 200)))
def test_random_arrays(tmp_path, a, fmt, cut):
    b = _encode(a, fmt)
    if b is None: return
    if cut is not None: b = b[:cut]
    p = tmp_path/f'x.{fmt.lower()}'; p.write_bytes(b)
    img = _check(p, load_image)
    if img is not None:
        assert img.dtype == np.uint8 and img.shape == (*a.shape[:2], 3)
        if cut is None and fmt in ('PNG', 'TIFF') and a.ndim == 2 and a.dtype == np.uint8:
            np.testing.assert_array_equal(img[..., 0], a)                       # lossless greyscale: exact
        if cut is None and fmt == 'PNG' and a.ndim == 2 and a.dtype == np.uint16:
            np.testing.assert_array_equal(img[..., 0], np.round(a / 257).astype(np.uint8))
    m = _check(p, load_mask, n_classes=20)
    if m is not None:
        assert m.dtype == np.uint8 and m.shape == a.shape[:2]
        assert ((m <= 20) | (m == 255)).all()

@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(['img', 'mask']), body=st.binary(max_size=200))
def test_dataset_items_with_random_files(tmp_path_factory, which, body):
    "A dataset item whose file is random bytes raises DataError naming that file (or is skipped with on_error='skip')."
    root = make_toy_voc(tmp_path_factory.getbasetemp()/'fuzz_toy', n=2, size=16, seed=0, n_val=1)
    p = root/('JPEGImages' if which == 'img' else 'SegmentationClass')/'toy_train_0000.png'
    keep = p.read_bytes()
    try:
        p.write_bytes(body)
        ds = SegDataset(root)
        try: it = ds[0]
        except DataError as e: assert 'toy_train_0000.png' in str(e)
        else: assert it['img'].shape[2] == 3
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            it = SegDataset(root, on_error='skip')[0]
        assert it['name'] in ('toy_train_0000', 'toy_train_0001')
    finally: p.write_bytes(keep)
