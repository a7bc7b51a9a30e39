"Determinism on the CPU: with a seed, two training runs and two CAM runs give identical tensors and identical files."
import numpy as np
import pytest
import torch
from pot_nb.train import fit_pot, unwrap_model, load_pot_model
from pot_nb.cams import make_cams

def test_two_training_runs_are_identical(tiny_run, tmp_path):
    root, learn, ckpt = tiny_run
    kw = dict(epochs=1, bs=4, size=48, n_clusters=2, metrics=(), n_valid=4, device='cpu')
    a = fit_pot(root, path=tmp_path/'a', **kw)
    b = fit_pot(root, path=tmp_path/'b', deterministic=True, **kw)     # deterministic kernels: same numbers on the CPU
    wa, wb, w0 = (unwrap_model(x).state_dict() for x in (a, b, learn))
    for k in wa: assert torch.equal(wa[k], wb[k]) and torch.equal(wa[k], w0[k]), k
    assert [float(l) for l in a.recorder.losses] == [float(l) for l in b.recorder.losses]
    c = fit_pot(root, path=tmp_path/'c', **{**kw, 'seed': 1})          # another seed: other weights
    assert any(not torch.equal(wa[k], v) for k, v in unwrap_model(c).state_dict().items() if v.is_floating_point())
    torch.use_deterministic_algorithms(False)

@pytest.mark.parametrize('kind', ['proto', 'fuse'])
def test_two_cam_runs_write_identical_files(tiny_run, tmp_path, kind):
    root, learn, ckpt = tiny_run
    d1 = make_cams(load_pot_model(ckpt), root, 'train', out_dir=tmp_path/'1', scales=(1.0, 0.5), kind=kind, progress=False)
    d2 = make_cams(load_pot_model(ckpt), root, 'train', out_dir=tmp_path/'2', scales=(1.0, 0.5), kind=kind, progress=False)
    f1 = sorted(d1.glob('*.npy'))
    assert len(f1) == 8 and [f.name for f in f1] == sorted(f.name for f in d2.glob('*.npy'))
    for f in f1: assert f.read_bytes() == (d2/f.name).read_bytes(), f.name
