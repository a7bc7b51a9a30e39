"pytest set-up: hypothesis runs derandomized under CI (same examples every run), randomized locally; shared helpers."
import os, subprocess, sys
from pathlib import Path
from hypothesis import settings, HealthCheck

settings.register_profile('ci', derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('dev', deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile('ci' if os.environ.get('CI') else 'dev')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: longer tests (still run by make test)')


def write_cams_from_masks(ds, cam_dir, blur:float=0):
    "CAM files made from a dataset's own ground-truth masks (optionally Gaussian-blurred), one per image."
    import numpy as np
    from scipy import ndimage
    from pot_nb.evaluate import save_cam
    for name in ds.names:
        m = ds.read_mask(name)
        keys = np.unique(m[(m > 0) & (m < 255)]).astype(np.int64) - 1
        maps = np.stack([(m == k + 1).astype(np.float32) for k in keys]).reshape(len(keys), *m.shape)
        if blur:
            maps = np.stack([ndimage.gaussian_filter(x, blur) for x in maps]).reshape(maps.shape)
            maps = maps / np.maximum(maps.max((1, 2), keepdims=True), 1e-5)
        save_cam(cam_dir/f'{name}.npy', keys, maps)


import pytest

@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A small toy dataset and a one-epoch POT run on it (checkpoint in run/models/pot.ckpt): shared by several test files."
    from pot_nb.data import make_toy_voc
    from pot_nb.train import fit_pot
    tmp = tmp_path_factory.mktemp('tiny')
    root = make_toy_voc(tmp/'toy', n=8, size=40, seed=0, n_val=4)
    learn = fit_pot(root, epochs=1, bs=4, size=48, n_clusters=2, metrics=(), path=tmp/'run', n_valid=4, device='cpu')
    return root, learn, tmp/'run'/'models'/'pot.ckpt'


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    "A small toy VOC folder (8 training, 4 validation images of 40 px), one per test module."
    from pot_nb.data import make_toy_voc
    return make_toy_voc(tmp_path_factory.mktemp('toy')/'toy', n=8, size=40, seed=1, n_val=4)

@pytest.fixture
def copy(toy, tmp_path):
    "A copy of `toy` that a test may break."
    import shutil
    from pathlib import Path
    return Path(shutil.copytree(toy, tmp_path/'t'))


def notebooks(folder):
    "The notebooks under `folder`, sub-folders (the studies) included, without Jupyter's checkpoint copies."
    return sorted(p for p in folder.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)


BIN = Path(sys.executable).parent      # the environment's console scripts

def run(*args, env=None, timeout=600):
    "A console script of the package, run as a shell would (no stdin); returns the CompletedProcess."
    return subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})


def one_error_line(r, prog, *words):
    "Exit status 1, nothing but one `prog: error: ...` line on stderr, naming `words`."
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{prog}: error: '), r.stderr[-3000:]
    for w in words: assert str(w) in lines[0], (w, lines[0])
