"""Interrupted jobs lose nothing: training stopped in the middle of an epoch resumes from its last checkpoint to exactly
the weights of an uninterrupted run; pseudo-label writing killed with SIGKILL leaves only whole files and resumes."""
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from fastai.callback.core import Callback
from pot_nb.data import make_toy_voc, SegDataset
from pot_nb.train import fit_pot, unwrap_model
from pot_nb.crf import make_pseudo_labels
from conftest import write_cams_from_masks

KW = dict(bs=4, size=40, n_clusters=2, metrics='auto', n_valid=4, device='cpu', seed=3)

class Killed(Exception): "Stands for a process being interrupted (KeyboardInterrupt, preemption)."

class StopAt(Callback):
    "Raise `Killed` after `n` training batches (counted over the whole run)."
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.learn.train_iter >= self.n: raise Killed(f'stopped after {self.n} batches')

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    return make_toy_voc(tmp_path_factory.mktemp('resume')/'toy', n=12, size=40, seed=2, n_val=4)

def _weights(learn): return {k: v.clone() for k, v in unwrap_model(learn).state_dict().items()}

@pytest.mark.parametrize('opt', ['adam', 'sgd'])
def test_resume_mid_epoch_equals_uninterrupted(toy, tmp_path, opt):
    ref = fit_pot(toy, epochs=3, path=tmp_path/'ref', opt=opt, **KW)
    n_iter = len(ref.dls.train)                                    # 3 batches per epoch
    with pytest.raises(Killed):                                    # in the middle of epoch 2
        fit_pot(toy, epochs=3, path=tmp_path/'cut', opt=opt, cbs=[StopAt(n_iter + 2)], **KW)
    st = torch.load(tmp_path/'cut'/'models'/'pot.ckpt', weights_only=False)
    assert st['epoch'] == 1                                        # only the finished epoch is in the checkpoint
    res = fit_pot(toy, epochs=3, path=tmp_path/'cut', opt=opt, resume=True, **KW)
    assert res.train_iter == 2 * n_iter                            # epochs 2 and 3 trained again, epoch 1 skipped
    a, b = _weights(ref), _weights(res)
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k                  # exactly the same weights, bit for bit
    oa, ob = ref.opt.state_dict(), res.opt.state_dict()            # and the same optimizer state
    for sa, sb in zip(oa['state'], ob['state']):
        for k in sa:
            if torch.is_tensor(sa[k]): assert torch.equal(sa[k], sb[k])
    # the validation loss and metrics of the last epoch match too (the smoothed training loss restarts on resume)
    assert ref.recorder.values[-1][1:] == res.recorder.values[-1][1:]

def test_resume_after_the_end_does_nothing(toy, tmp_path):
    a = fit_pot(toy, epochs=1, path=tmp_path, **KW)
    w = _weights(a)
    b = fit_pot(toy, epochs=1, path=tmp_path, resume=True, **KW)
    assert all(torch.equal(w[k], v) for k, v in _weights(b).items())

def test_killed_pseudo_labels_resume(toy, tmp_path):
    "SIGKILL a make_pseudo_labels process mid-way: every PNG it left is whole, and the rerun gives the reference files."
    ds = SegDataset(toy)
    cams = tmp_path/'cams'; write_cams_from_masks(ds, cams, blur=1.5)
    ref = make_pseudo_labels(cams, toy, out_dir=tmp_path/'ref', crf=True)
    out = tmp_path/'killed'
    code = textwrap.dedent(f'''
        import time, pot_nb.crf as crf
        slow = crf.save_mask
        def save_slowly(*a, **k):
            time.sleep(0.4); return slow(*a, **k)
        crf.save_mask = save_slowly
        crf.make_pseudo_labels({str(cams)!r}, {str(toy)!r}, out_dir={str(out)!r}, crf=True)
    ''')
    p = subprocess.Popen([sys.executable, '-c', code])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob('*.png'))) < 3: time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    done = sorted(out.glob('*.png'))
    assert 3 <= len(done) < len(ds), len(done)
    for f in done:                                                  # whole files only
        with Image.open(f) as im: im.load()
    make_pseudo_labels(cams, toy, out_dir=out, crf=True)
    assert sorted(f.name for f in out.glob('*.png')) == sorted(f.name for f in ref.glob('*.png'))
    assert not list(out.glob('.*.tmp'))                             # the killed run's temporary file is gone
    for f in ref.glob('*.png'):
        np.testing.assert_array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(out/f.name)))
