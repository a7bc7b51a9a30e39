"""The later stages kept honest on small runs: the segmentation network learns from its pseudo masks (it beats the same
network taught the masks of other images), and IRN's walk does not make complete CAMs worse."""
import shutil
from pathlib import Path
import numpy as np
import pytest
import torch
from scipy import ndimage
from pot_nb.data import make_toy_voc, load_dataset
from pot_nb.evaluate import save_cam, evaluate_cams, evaluate_masks
from pot_nb.crf import make_pseudo_labels
from pot_nb.irn import fit_irn, make_irn_labels
from pot_nb.seg import fit_seg, predict_masks

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    "A toy set big enough to learn from: 48 training and 16 validation images of 64 px."
    return make_toy_voc(tmp_path_factory.mktemp('stages')/'toy', n=48, size=64, seed=3, n_val=16)


def complete_cams(ds, cam_dir):
    "CAMs that cover each whole object and spill past its edges, fading (the kind POT's prototype CAM is)."
    for name in ds.names:
        m = ds.read_mask(name)
        keys = np.unique(m[(m > 0) & (m < 255)]).astype(np.int64) - 1
        maps = [ndimage.gaussian_filter(ndimage.binary_dilation(m == k + 1, iterations=3).astype(np.float32), 2)
                for k in keys]
        maps = np.stack(maps).reshape(len(keys), *m.shape) if len(keys) else np.zeros((0, *m.shape), np.float32)
        save_cam(cam_dir/f'{name}.npy', keys, maps / np.maximum(maps.max((1, 2), keepdims=True), 1e-5))
    return cam_dir


def test_segmentation_learns_from_its_pseudo_masks(shapes, tmp_path):
    "The same network and schedule, taught the right pseudo masks or those of other images (a fixed shuffle)."
    torch.set_num_threads(1)
    ds = load_dataset(shapes, 'train')
    cams = complete_cams(ds, tmp_path/'cams')
    right = make_pseudo_labels(cams, ds, out_dir=tmp_path/'right')
    wrong = tmp_path/'wrong'; wrong.mkdir()
    order = np.random.default_rng(0).permutation(len(ds.names))
    # another image's mask, at this image's size (the toy images share one size)
    for a, b in zip(ds.names, np.array(ds.names)[np.roll(order, 1)]): shutil.copy(right/f'{b}.png', wrong/f'{a}.png')
    scores = {}
    for name, labels in (('right', right), ('wrong', wrong)):
        learn = fit_seg(shapes, labels, epochs=4, bs=8, size=64, n_valid=16, path=tmp_path/name, device='cpu')
        pm = predict_masks(learn, shapes, 'val', out_dir=tmp_path/f'{name}_val', progress=False)
        scores[name] = evaluate_masks(pm, shapes, 'val')['miou']
    assert scores['right'] > scores['wrong'] + 0.15, scores


def test_walk_keeps_complete_cams(shapes, tmp_path):
    "IRN's masks, with the package's defaults, from CAMs that already cover their objects: no worse than the CAMs."
    torch.set_num_threads(1)
    ds = load_dataset(shapes, 'train')
    cams = complete_cams(ds, tmp_path/'cams')
    learn = fit_irn(cams, shapes, epochs=4, bs=8, size=64, path=tmp_path, device='cpu')
    masks = make_irn_labels(learn, cams, shapes, out_dir=tmp_path/'irn', progress=False)
    cam = evaluate_cams(cams, shapes, 'train')['miou']          # at their own background rule, 1 − max
    irn = evaluate_masks(masks, shapes, 'train')['miou']
    assert irn >= cam, (irn, cam)
