"""Trust: data files never run code, stale outputs are never handed back, commands exit 0 on success and 1 with one
line on failure, memory stays bounded on huge images, bad arguments are refused by name, a full disk loses nothing.

The pickle tests use a harmless payload that would create a marker file when unpickled; each asserts that the marker
was not created and that the error names the file."""
import json, os, pickle, resource, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from pot_nb.files import UnsafeFileError, DiskFullError, read_npy, torch_load, atomic_write
from pot_nb.data import DataError, SegDataset, load_dataset, make_toy_voc, load_cls_labels, save_mask, wsss_dls
from pot_nb.evaluate import evaluate_cams, evaluate_masks, load_cam, save_cam
from pot_nb.cams import make_cams
from pot_nb.crf import make_pseudo_labels
from pot_nb.prior import check_priors, fuse_cam_dir
from pot_nb.train import fit_pot, load_pot_model, save_checkpoint, load_checkpoint
from pot_nb.model import POTNet
from conftest import write_cams_from_masks, run, one_error_line

BIN = Path(sys.executable).parent
KW = dict(epochs=1, bs=4, size=48, n_clusters=2, metrics=(), n_valid=4, device='cpu')


class Payload:
    "Unpickling this runs `touch <marker>`."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def plant_npy(path, obj):
    "Write a `.npy` holding a pickled object array, as np.save does for dicts."
    with open(path, 'wb') as f: np.save(f, np.array(obj, dtype=object), allow_pickle=True)


@pytest.fixture(scope='module')
def trained(toy, tmp_path_factory):
    "A one-epoch run on the toy data: (learner, checkpoint path)."
    d = tmp_path_factory.mktemp('run')
    learn = fit_pot(toy, path=d, **KW)
    return learn, d/'models'/'pot.ckpt'


# ------------------------------------------------------------------------------------------ files never run code

def test_label_file_with_a_payload_is_refused(copy, tmp_path):
    marker = tmp_path/'ran'
    lab = load_cls_labels(copy/'cls_labels.npy')
    plant_npy(copy/'cls_labels.npy', {**lab, 'x': Payload(marker)})
    with pytest.raises(UnsafeFileError, match=r'cls_labels\.npy: refuses to unpickle posix\.system'): SegDataset(copy)
    r = run('pot_train', copy, '--epochs', '1', '--bs', '2', '--size', '32', '--out', tmp_path/'run')
    one_error_line(r, 'pot_train', 'cls_labels.npy', 'refuses to unpickle posix.system')
    assert not marker.exists()


def test_cam_folder_with_a_payload_is_refused(toy, trained, tmp_path):
    "Every reader of CAM files: evaluate, pseudo labels, priors, fusion, and make_cams checking what is already done."
    marker, cams = tmp_path/'ran', tmp_path/'cams'
    ds = SegDataset(toy)
    write_cams_from_masks(ds, cams)
    bad = cams/f'{ds.names[0]}.npy'
    plant_npy(bad, dict(keys=np.array([0]), high_res=Payload(marker)))
    msg = rf'{ds.names[0]}\.npy: refuses to unpickle posix\.system'
    with pytest.raises(UnsafeFileError, match=msg): evaluate_cams(cams, toy)
    with pytest.raises(UnsafeFileError, match=msg): make_pseudo_labels(cams, toy, out_dir=tmp_path/'pl', crf=False)
    with pytest.raises(UnsafeFileError, match=msg): check_priors(cams, ds)
    with pytest.raises(UnsafeFileError, match=msg): fuse_cam_dir(cams, cams, tmp_path/'fused', ds.names, ds.n_classes)
    with pytest.raises(UnsafeFileError, match=msg): make_cams(trained[0], toy, out_dir=cams, scales=(1.0,), progress=False)
    one_error_line(run('pot_eval', cams, toy), 'pot_eval', bad, 'refuses to unpickle posix.system')
    one_error_line(run('pot_pseudo', cams, toy, '--no_crf', '--out', tmp_path/'pl2'), 'pot_pseudo', 'refuses to unpickle')
    assert not marker.exists()


def test_checkpoint_with_a_payload_is_refused(toy, trained, tmp_path):
    learn, ckpt = trained
    marker = tmp_path/'ran'
    state = torch.load(ckpt, weights_only=True)
    state['meta']['note'] = Payload(marker)
    evil = tmp_path/'models'/'pot.ckpt'; evil.parent.mkdir()
    torch.save(state, evil)
    with pytest.raises(UnsafeFileError, match=r'pot\.ckpt: refuses to unpickle posix\.system'): load_pot_model(evil)
    with pytest.raises(UnsafeFileError, match='refuses to unpickle posix.system'):
        fit_pot(toy, path=tmp_path, resume=True, **KW)
    one_error_line(run('pot_cams', evil, toy, '--scales', '1.0', '--out', tmp_path/'c'), 'pot_cams', evil, 'posix.system')
    assert not marker.exists()


def test_feature_cache_with_a_payload_is_refused(tmp_path):
    from pot_nb.studies.ablation import _load_or_cache
    marker = tmp_path/'ran'
    torch.save({'feats': [torch.zeros(1)], 'x': Payload(marker)}, tmp_path/'cache.pt')
    with pytest.raises(UnsafeFileError, match=r'cache\.pt: refuses to unpickle posix\.system'):
        _load_or_cache(tmp_path/'cache.pt', None, 64, 'cpu')
    assert not marker.exists()


def test_the_fields_formats_still_load(copy, tmp_path):
    "IRN's integer keys, SIPE/POT's string keys (pickled dicts of arrays), IRN/SIPE-style CAM dicts."
    lab = load_cls_labels(copy/'cls_labels.npy')
    np.save(copy/'cls_labels.npy', {k: np.asarray(v, np.float32) for k, v in lab.items()}, allow_pickle=True)
    ds = SegDataset(copy); assert ds.label(0).shape == (3,)
    irn = {2007000000 + i: np.eye(20, dtype=np.float32)[i] for i in range(3)}
    np.save(tmp_path/'irn.npy', irn, allow_pickle=True)
    got = load_cls_labels(tmp_path/'irn.npy')
    assert sorted(got) == sorted(irn) and all(np.array_equal(got[k], irn[k]) for k in irn)
    # IRN's make_cam: keys and the stride-4 cam are tensors, high_res an array
    cam = dict(keys=torch.tensor([0, 14]), cam=torch.rand(2, 8, 8), high_res=np.random.rand(2, 32, 32).astype(np.float32))
    np.save(tmp_path/'cam.npy', cam, allow_pickle=True)
    d = load_cam(tmp_path/'cam.npy')
    assert d['keys'].tolist() == [0, 14] and np.array_equal(d['high_res'], cam['high_res'])
    assert torch.equal(d['cam'], cam['cam'])
    np.save(tmp_path/'sipe.npy', dict(keys=np.array([3]), high_res=cam['high_res'][:1]), allow_pickle=True)
    assert load_cam(tmp_path/'sipe.npy')['keys'].tolist() == [3]


def test_older_checkpoints_still_load(toy, trained, tmp_path):
    "A checkpoint in the earlier layout (NumPy random state, fastai `L` hypers) loads through the restricted reader."
    from fastcore.foundation import L
    learn, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    state['rng']['numpy'] = np.random.get_state()
    state['opt'] = learn.opt.state_dict(); assert isinstance(state['opt']['hypers'], L)
    old = tmp_path/'old.ckpt'; torch.save(state, old)
    with pytest.raises(Exception): torch.load(old, weights_only=True)         # PyTorch alone refuses it
    assert load_pot_model(old).n_classes == 3
    assert load_checkpoint(learn, old) == 1


def test_final_model_save_is_atomic(toy, tmp_path, monkeypatch):
    "A kill while fastai's `.pth` is written leaves the previous file whole (it used to leave it empty)."
    fit_pot(toy, path=tmp_path, **KW)
    pth = tmp_path/'models'/'pot.pth'
    before = pth.read_bytes()
    real_save = torch.save
    def killed(obj, f, *a, **k):
        if str(f).endswith('.tmp') and '.pot.pth.' in str(f):
            Path(f).write_bytes(b'\x00' * 100); raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, 'save', killed)
    with pytest.raises(KeyboardInterrupt): fit_pot(toy, path=tmp_path, seed=1, **KW)
    assert pth.read_bytes() == before and not list(pth.parent.glob('.*.tmp'))
    assert 'model' in torch_load(pth, 'model')                              # and it still loads


# ----------------------------------------------------------------------------------------- no stale results

def test_another_model_never_gets_the_first_models_cams(toy, tmp_path):
    a = fit_pot(toy, path=tmp_path/'a', seed=0, **KW)
    b = fit_pot(toy, path=tmp_path/'b', seed=1, **KW)
    da = make_cams(a, toy, scales=(1.0,), progress=False)
    db = make_cams(b, toy, scales=(1.0,), progress=False)
    assert da != db and da.parent == db.parent == toy                      # default folders differ by model
    # b into a's folder: refused, naming the model, and a's files stay untouched
    stamp = {f.name: f.read_bytes() for f in da.glob('*.npy')}
    with pytest.raises(ValueError, match=r'other settings: model .* pass overwrite=True'):
        make_cams(b, toy, out_dir=da, scales=(1.0,), progress=False)
    assert {f.name: f.read_bytes() for f in da.glob('*.npy')} == stamp
    for change in (dict(kind='cls'), dict(scales=(1.0, 0.5)), dict(flip=False), dict(n_clusters=3)):
        opts = dict(scales=(1.0,)) | change
        with pytest.raises(ValueError, match='other settings'): make_cams(a, toy, out_dir=da, progress=False, **opts)
    # overwrite=True replaces them with b's own CAMs, which then score as b's do
    make_cams(b, toy, out_dir=da, scales=(1.0,), overwrite=True, progress=False)
    for f in db.glob('*.npy'): np.testing.assert_array_equal(load_cam(f)['high_res'], load_cam(da/f.name)['high_res'])
    assert evaluate_cams(da, toy)['miou'] == evaluate_cams(db, toy)['miou']
    # files without a record (another tool, older versions) are not taken as done either
    write_cams_from_masks(SegDataset(toy), tmp_path/'plain')
    with pytest.raises(ValueError, match='no record of the settings'):
        make_cams(a, toy, out_dir=tmp_path/'plain', scales=(1.0,), progress=False)
    one_error_line(run('pot_cams', tmp_path/'b'/'models'/'pot.ckpt', toy, '--scales', '1.0', '--out', tmp_path/'plain'),
                   'pot_cams', 'no record of the settings', '--overwrite')
    r = run('pot_cams', tmp_path/'b'/'models'/'pot.ckpt', toy, '--scales', '1.0', '--out', tmp_path/'plain', '--overwrite')
    assert r.returncode == 0, r.stderr[-2000:]
    # the prototype options are flags too (default: as trained); another value is another setting, not a done file
    ck = tmp_path/'b'/'models'/'pot.ckpt'
    h = run('pot_cams', '--help').stdout
    assert '--bg_contrast' in h and '--n_clusters' in h and '(default: as trained)' in h
    one_error_line(run('pot_cams', ck, toy, '--scales', '1.0', '--out', tmp_path/'plain', '--bg_contrast', 'false'),
                   'pot_cams', 'bg_contrast', '--overwrite')


def test_pseudo_labels_follow_their_cams_and_options(toy, tmp_path):
    ds = SegDataset(toy)
    cams = tmp_path/'cams'; write_cams_from_masks(ds, cams, blur=1.5)
    out = make_pseudo_labels(cams, toy, out_dir=tmp_path/'pl', crf=False)
    with pytest.raises(ValueError, match=r"crf=False, not True.*overwrite=True"):
        make_pseudo_labels(cams, toy, out_dir=out, crf=True)
    write_cams_from_masks(ds, cams, blur=3)                                   # new CAMs, same names
    with pytest.raises(ValueError, match='was made from another CAM file'):
        make_pseudo_labels(cams, toy, out_dir=out, crf=False)
    make_pseudo_labels(cams, toy, out_dir=out, crf=False, overwrite=True)
    again = make_pseudo_labels(cams, toy, out_dir=tmp_path/'fresh', crf=False)
    for f in again.glob('*.png'):
        np.testing.assert_array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(out/f.name)))
    with Image.open(next(out.glob('*.png'))) as im:                          # still a plain greyscale PNG
        assert im.mode == 'L' and 'pot_nb' in im.text


# ----------------------------------------------------------------------------------------- commands exit 0

def test_every_command_exits_0_on_success(toy, trained, tmp_path):
    "Each console script: status 0, results on stdout, no Python value dumped on stderr; `a && b` chains."
    ckpt = trained[1]
    sh = (f'{BIN}/pot_train {toy} --epochs 1 --bs 4 --size 48 --n_valid 4 --out {tmp_path}/run && '
          f'{BIN}/pot_cams {tmp_path}/run/models/pot.ckpt {toy} --scales 1.0 --out {tmp_path}/cams && '
          f'{BIN}/pot_eval {tmp_path}/cams {toy} && '
          f'{BIN}/pot_pseudo {tmp_path}/cams {toy} --no_crf --out {tmp_path}/pl && '
          f'{BIN}/pot_eval {tmp_path}/pl {toy} --masks && echo CHAIN-DONE')
    r = subprocess.run(['bash', '-c', sh], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0 and r.stdout.strip().endswith('CHAIN-DONE'), r.stderr[-3000:]
    assert 'Learner' not in r.stderr and 'PosixPath' not in r.stderr and "{'miou'" not in r.stderr, r.stderr[-2000:]
    assert 'mIoU' in r.stdout and f'CAMs in {tmp_path}/cams' in r.stdout
    # the output is a pipe, not a terminal: one line per epoch, no progress-bar redraws
    assert 'epoch 1/1: train_loss ' in r.stdout and '█' not in r.stdout + r.stderr and '\r' not in r.stdout + r.stderr
    r = run('pot_bench_core', '--batch', '2', '--k', '2', '--repeats', '1', '--grid', '8', '--dim', '16',
            '--n_classes', '3', '--no_memory')
    assert r.returncode == 0 and '|' in r.stdout and r.stderr.count('Traceback') == 0, r.stderr[-2000:]
    r = run('pot_bench', '--arch', 'lite0', '--batch', '2', '--size', '64', '--repeats', '1', '--no_memory',
            '--cam_images', '2', '--cam_size', '64', '--pretrained', 'no')
    assert r.returncode == 0 and '|' in r.stdout, r.stderr[-2000:]
    r = run('pot_ablate', '--data', toy, '--out', tmp_path/'abl', '--size', '48', '--bs', '4', '--seeds', '0', '--rows', 'cam',
            '--n-eval-train', '4', '--no-crf')
    assert r.returncode == 0 and 'cam' in r.stdout, r.stderr[-2000:]


def test_the_demo_exits_0(tmp_path):
    "`pot_demo` (what `make demo` runs) at a miniature size: status 0 and its table on stdout."
    from pot_nb.data import find_fmnist
    try: find_fmnist()
    except Exception as e: pytest.skip(f'no Fashion-MNIST here: {str(e)[:100]}')
    r = run('pot_demo', '--out', tmp_path/'demo', '--n_train', '32', '--n_val', '8', '--epochs', '1', '--bs', '8',
            '--size', '64', '--n_eval', '4', '--irn_epochs', '1', '--seg_epochs', '1')
    assert r.returncode == 0, r.stderr[-3000:]
    assert '| pot | ' in r.stdout and '| cam | ' in r.stdout and (tmp_path/'demo'/'results.json').is_file()
    assert 'pot predict: miou' in r.stdout                                  # every stage says what it scored
    assert r.stdout.startswith('pot_demo: builds the Fashion-MNIST benchmark (32 training / 8 validation images')
    assert 'minutes on a 2-core CPU' in r.stdout.splitlines()[1]                     # says up front what it runs and takes


def test_every_command_fails_with_one_line(toy, tmp_path):
    one_error_line(run('pot_train', tmp_path/'none'), 'pot_train', tmp_path/'none')
    one_error_line(run('pot_cams', tmp_path/'x.ckpt', toy), 'pot_cams', 'no checkpoint at')
    one_error_line(run('pot_eval', tmp_path/'none', toy), 'pot_eval', 'missing')
    one_error_line(run('pot_pseudo', tmp_path/'none', toy), 'pot_pseudo', 'missing')
    one_error_line(run('pot_demo', '--out', tmp_path/'d', '--n_train', '0'), 'pot_demo')
    one_error_line(run('pot_bench_core', '--batch', '0', '--repeats', '1', '--no_memory'), 'pot_bench_core')
    one_error_line(run('pot_ablate', '--data', tmp_path/'none', '--out', tmp_path/'a'), 'pot_ablate', tmp_path/'none')
    r = run('pot_eval')                                                         # argparse's own usage error
    assert r.returncode == 2 and 'usage' in r.stderr


# ----------------------------------------------------------------------------------------- bounded memory

@pytest.mark.slow
def test_a_huge_image_runs_in_bounded_memory(toy, trained, tmp_path):
    "A 9000 × 9000 PNG (tiny on disk): CAMs at image size, computed at `max_side`; peak memory stays in a few GB."
    big = Path(shutil.copytree(toy, tmp_path/'big'))
    name = SegDataset(big).names[0]
    img = np.zeros((9000, 9000, 3), np.uint8); img[2000:7000, 3000:6000] = (200, 30, 30)
    Image.fromarray(img).save(big/'JPEGImages'/f'{name}.png')
    assert (big/'JPEGImages'/f'{name}.png').stat().st_size < 500_000
    (big/'SegmentationClass'/f'{name}.png').unlink()                          # CAMs need no mask
    (big/'ImageSets'/'Segmentation'/'one.txt').write_text(name + '\n')
    code = (f'import resource; from pot_nb.train import load_pot_model; from pot_nb.cams import make_cams\n'
            f'make_cams(load_pot_model({str(trained[1])!r}), {str(big)!r}, "one", out_dir={str(tmp_path/"c")!r}, '
            f'scales=(1.0, 0.5, 1.5, 2.0), progress=False)\n'
            f'print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    peak_gb = int(r.stdout.split()[-1]) / 2**20
    assert peak_gb < 6, f'peak RSS {peak_gb:.1f} GB'
    d = load_cam(tmp_path/'c'/f'{name}.npy')
    assert d['high_res'].shape[1:] == (9000, 9000)


def test_memory_error_names_the_image(toy, trained, tmp_path, monkeypatch):
    import pot_nb.cams as cams
    def oom(*a, **k): raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 GB")
    monkeypatch.setattr(cams, 'image_cams', oom)
    with pytest.raises(MemoryError, match=r'image toy_train_0000 \(40×40 px\): out of memory .* lower max_side'):
        make_cams(trained[0], toy, out_dir=tmp_path/'c', progress=False)


# ----------------------------------------------------------------------------------------- bad arguments

def test_duplicate_class_names_are_refused(copy):
    (copy/'classes.txt').write_text('circle\nsquare\ncircle\n')
    with pytest.raises(DataError, match=r"classes\.txt: class names must be unique; 'circle' appear"): SegDataset(copy)
    with pytest.raises(DataError, match='classes=: class names must be unique'): SegDataset(copy, classes=['a', 'a', 'b'])


def test_a_split_without_any_label_is_refused(copy):
    lab = load_cls_labels(copy/'cls_labels.npy')
    np.save(copy/'cls_labels.npy', {k: np.zeros_like(v) for k, v in lab.items()}, allow_pickle=True)
    with pytest.raises(DataError, match=r"split 'train': every image label is all zero"): wsss_dls(copy, bs=2, size=32)
    with pytest.raises(DataError, match='every image label is all zero'): fit_pot(copy, **KW)


def test_bad_numbers_are_refused_by_name(toy, trained, tmp_path):
    learn = trained[0]
    for k in ('bs', 'size'):
        for v in (0, -1):
            with pytest.raises(ValueError, match=f'{k} must be a positive integer, got {v}'): wsss_dls(toy, **{k: v})
    with pytest.raises(ValueError, match='bs must be a positive integer'): fit_pot(toy, **(KW | dict(bs=0)))
    with pytest.raises(ValueError, match='scales must be a non-empty list'): make_cams(learn, toy, scales=(), progress=False)
    with pytest.raises(ValueError, match='n_images must be >= 1'): make_cams(learn, toy, n_images=0, progress=False)
    write_cams_from_masks(SegDataset(toy), tmp_path/'cams')
    with pytest.raises(ValueError, match='n_images must be >= 1'): evaluate_cams(tmp_path/'cams', toy, n_images=0)
    with pytest.raises(ValueError, match='n_images must be >= 1'): make_pseudo_labels(tmp_path/'cams', toy, n_images=-2)


def test_names_and_splits_cannot_leave_their_folder(toy, tmp_path):
    with pytest.raises(DataError, match=r"split '\.\./\.\./etc' is not a plain file name"): load_dataset(toy, '../../etc')
    write_cams_from_masks(SegDataset(toy), tmp_path/'cams')
    (tmp_path/'x.npy').write_bytes((tmp_path/'cams'/'toy_train_0000.npy').read_bytes())
    with pytest.raises(ValueError, match=r"image name '\.\./x' is not a plain file name"):
        evaluate_cams(tmp_path/'cams', toy, names=['../x'])
    with pytest.raises(ValueError, match='not a plain file name'):
        make_pseudo_labels(tmp_path/'cams', toy, names=['../x'], out_dir=tmp_path/'pl')
    assert not (tmp_path/'x.png').exists()
    (toy/'ImageSets'/'Segmentation'/'evil.txt').write_text('toy_train_0000\n..\n')
    try:
        with pytest.raises(DataError, match=r"evil\.txt: image name '\.\.' is not a plain file name"): SegDataset(toy, 'evil')
    finally: (toy/'ImageSets'/'Segmentation'/'evil.txt').unlink()


# ----------------------------------------------------------------------------------------- a full disk

@pytest.fixture
def tiny_disk(tmp_path):
    "A real 1 MiB file system (tmpfs), for writes that run out of space; skipped where mounting is not allowed."
    d = tmp_path/'tiny'; d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(d)], capture_output=True)
    if r.returncode: pytest.skip(f'cannot mount a small tmpfs here: {r.stderr.decode().strip()}')
    try: yield d
    finally: subprocess.run(['umount', '-l', str(d)])


def test_a_full_disk_names_the_file_and_leaves_nothing(tiny_disk, trained):
    big = np.random.rand(2, 400, 400).astype(np.float32)                      # 1.3 MB: more than the disk
    with pytest.raises(DiskFullError, match=r'big\.npy: disk full while writing the CAM file'):
        save_cam(tiny_disk/'big.npy', [0, 1], big)
    assert list(tiny_disk.iterdir()) == []
    small = save_cam(tiny_disk/'small.npy', [0], big[:1, :100, :100])           # what fits is still written
    assert load_cam(small)['high_res'].shape == (1, 100, 100)
    with pytest.raises(DiskFullError, match=r'pot\.ckpt: disk full while writing the checkpoint'):
        save_checkpoint(trained[0], tiny_disk/'pot.ckpt', epoch=1)                # a ~17 MB checkpoint
    noise = np.random.default_rng(0).integers(0, 21, (2000, 2000))                # ~2 MB even compressed
    with pytest.raises(DiskFullError, match=r'm\.png: disk full while writing the mask PNG'):
        save_mask(tiny_disk/'m.png', noise)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ['small.npy']           # no temporary file left


# ----------------------------------------------------------------------------------------- two writers

def test_a_live_writers_temporary_file_is_kept(toy, trained, tmp_path):
    "make_cams cleans up temporary files of killed runs, never the one another running process is writing."
    out = tmp_path/'cams'; out.mkdir()
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
        live_tmp, dead_tmp = out/f'.toy_train_0000.npy.{other.pid}.tmp', out/f'.toy_train_0000.npy.{dead.stdout.strip()}.tmp'
        live_tmp.write_bytes(b'being written'); dead_tmp.write_bytes(b'left by a kill')
        make_cams(trained[0], toy, out_dir=out, scales=(1.0,), progress=False)
        assert live_tmp.exists() and not dead_tmp.exists()
    finally:
        other.kill(); other.wait()


def test_data_warnings_point_at_the_callers_line(copy):
    "A skipped item's DataWarning names the user's line, even through `load_dataset`, not a line inside pot_nb."
    from pot_nb.data import DataWarning
    (copy/'JPEGImages'/'toy_train_0001.png').unlink()
    with pytest.warns(DataWarning, match='skipped 1 of 8') as w: load_dataset(copy, on_error='skip')
    assert [x.filename for x in w if issubclass(x.category, DataWarning)] == [__file__]
