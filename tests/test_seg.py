"""The segmentation stage and the whole pipeline as users meet them: masks at every image's own size, resuming after
an interruption, bad input, and `pot_run` from a shell (a second run skips every stage, a changed one is redone)."""
import json, shutil, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from fastai.callback.core import Callback
from pot_nb.data import make_toy_voc, load_dataset
from pot_nb.formats import load_mask
from pot_nb.train import unwrap_model
from pot_nb.seg import SegNet, fit_seg, load_seg_model, predict_masks
from conftest import run, one_error_line

KW = dict(bs=4, size=32, pretrained=False, n_valid=4, device='cpu', seed=1)


class Killed(Exception): "Stands for a process being interrupted."

class StopAt(Callback):
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.learn.train_iter >= self.n: raise Killed(f'stopped after {self.n} batches')


@pytest.fixture(scope='module')
def sized(tmp_path_factory):
    "A toy VOC folder whose images have different sizes (some resized), with the ground truth as 'pseudo masks'."
    root = make_toy_voc(tmp_path_factory.mktemp('seg')/'toy', n=12, size=40, seed=4, n_val=6)
    ds = load_dataset(root, 'val')
    for i, (w, h) in zip(range(3), [(53, 31), (29, 47), (64, 40)]):
        p, m = ds.image_path(ds.names[i]), ds.mask_path(ds.names[i])
        Image.open(p).convert('RGB').resize((w, h)).save(p)
        Image.open(m).resize((w, h), Image.NEAREST).save(m)
    return root


def test_one_png_per_image_at_its_own_size(sized, tmp_path):
    net = SegNet(load_dataset(sized, 'val').n_classes, pretrained=False)
    out = predict_masks(net, sized, 'val', out_dir=tmp_path/'m', scales=(1.0, 0.7), progress=False)
    ds = load_dataset(sized, 'val')
    assert sorted(p.stem for p in out.glob('*.png')) == sorted(ds.names)
    for nm in ds.names: assert load_mask(out/f'{nm}.png').shape == ds.read_image(nm).shape[:2], nm


def test_interrupted_prediction_resumes(sized, tmp_path):
    net = SegNet(load_dataset(sized, 'val').n_classes, pretrained=False)
    out = predict_masks(net, sized, 'val', out_dir=tmp_path/'m', progress=False)
    whole = {p.name: p.read_bytes() for p in out.glob('*.png')}
    first = sorted(out.glob('*.png'))[0]
    first.write_bytes(whole[first.name][:30])                       # a kill in the middle of writing (no atomic rename)
    (out/f'.{first.name}.99999999.tmp').write_bytes(b'half')       # a killed writer's temporary file
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        predict_masks(net, sized, 'val', out_dir=out, progress=False)
    assert any('unreadable' in str(x.message) for x in w)
    assert {p.name: p.read_bytes() for p in out.glob('*.png')} == whole and not list(out.glob('.*.tmp'))


def test_training_resumes_mid_epoch_to_the_same_weights(sized, tmp_path):
    labels = sized/'SegmentationClass'
    ref = fit_seg(sized, labels, epochs=2, path=tmp_path/'ref', **KW)
    n_iter = len(ref.dls.train)
    with pytest.raises(Killed): fit_seg(sized, labels, epochs=2, path=tmp_path/'cut', cbs=[StopAt(n_iter + 1)], **KW)
    res = fit_seg(sized, labels, epochs=2, path=tmp_path/'cut', resume=True, **KW)
    assert res.train_iter == n_iter                                  # only the second epoch trained again
    a, b = unwrap_model(ref).state_dict(), unwrap_model(res).state_dict()
    for k in a: assert torch.equal(a[k], b[k]), k
    m = load_seg_model(tmp_path/'cut'/'models'/'seg.ckpt')
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(m(x), unwrap_model(res).eval()(x))


def test_bad_input_is_named(sized, tiny_run, tmp_path):
    part = Path(shutil.copytree(sized/'SegmentationClass', tmp_path/'part'))
    gone = sorted(part.glob('*.png'))[0]; gone.unlink()
    with pytest.raises(FileNotFoundError, match=f'missing in {part}'): fit_seg(sized, part, epochs=0, **KW)
    bad = Path(shutil.copytree(sized/'SegmentationClass', tmp_path/'bad'))
    f = sorted(bad.glob('*.png'))[1]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(f)
    learn = fit_seg(sized, bad, epochs=0, path=tmp_path, **KW)
    with pytest.raises(ValueError, match=f'{f.name}: the mask is \\(5, 5\\)'): learn.dls.train.dataset[learn.dls.train.dataset.names.index(f.stem)]
    with pytest.raises(ValueError, match='not a segmentation-network checkpoint'): load_seg_model(tiny_run[2])


def test_pot_run_from_a_shell(tmp_path):
    toy = make_toy_voc(tmp_path/'toy', n=12, size=40, seed=5, n_val=4)
    args = ('pot_run', toy, '--out', tmp_path/'run', '--size', '32', '--bs', '4', '--epochs', '1', '--scales', '1.0',
            '--irn_epochs', '1', '--exp_times', '3', '--seg_epochs', '1', '--methods', 'cam,pot')
    r = run(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '| cam |' in r.stdout and '| pot |' in r.stdout
    res = json.loads((tmp_path/'run'/'results.json').read_text())
    assert list(res) == ['cam', 'pot'] and all(0 <= res[m]['predict']['miou'] <= 1 for m in res)
    again = run(*args)
    assert again.returncode == 0 and again.stdout.count('done with these settings, skipped') == 12, again.stdout[-2000:]
    changed = run(*args[:-2], '--methods', 'pot', '--seg_epochs', '2')
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert 'irn: done with these settings, skipped' in changed.stdout
    assert 'seg: made with other settings, starting it again' in changed.stdout
    one_error_line(run('pot_run', tmp_path/'none'), 'pot_run', 'none')
