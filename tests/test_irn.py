"IRN (pot_nb.irn) as users meet it: bad input, resuming, shards, the checkpoint, and its two commands from a shell."
import shutil, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from pot_nb.data import load_dataset, MaskCropDataset
from pot_nb.evaluate import save_cam, evaluate_masks
from pot_nb.formats import load_mask
from pot_nb.irn import (BoundaryNet, fit_irn, load_irn_model, make_ir_labels, make_irn_labels,
                        random_walk, dense_random_walk, pair_affinity, walk_directions)
from conftest import write_cams_from_masks, run, one_error_line

@pytest.fixture(scope='module')
def cams(toy, tmp_path_factory):
    "Blurred ground-truth CAMs of the toy training images."
    d = tmp_path_factory.mktemp('cams')/'cams'
    write_cams_from_masks(load_dataset(toy, 'train'), d, blur=3)
    return d


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return BoundaryNet(pretrained=False).eval()


def test_cam_folder_missing_files_is_named(toy, cams, net, tmp_path):
    part = Path(shutil.copytree(cams, tmp_path/'part'))
    gone = sorted(part.glob('*.npy'))[2]
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=f'missing in {part}.*{gone.stem}'):
        make_irn_labels(net, part, toy, out_dir=tmp_path/'out', progress=False)
    with pytest.raises(FileNotFoundError, match=gone.stem): make_ir_labels(part, toy, out_dir=tmp_path/'ir')


def test_cams_of_another_size_are_named(toy, cams, net, tmp_path):
    bad = Path(shutil.copytree(cams, tmp_path/'bad'))
    f = sorted(bad.glob('*.npy'))[1]
    save_cam(f, np.array([0]), np.zeros((1, 7, 9), np.float32))
    with pytest.raises(ValueError, match=rf'{f.name}: CAMs are \(7, 9\), the image is'):
        make_irn_labels(net, bad, toy, out_dir=tmp_path/'out', progress=False)


def test_label_png_of_another_size_is_named(toy, cams, tmp_path):
    ir = make_ir_labels(cams, toy, out_dir=tmp_path/'ir', crf=False)
    ds = load_dataset(toy, 'train')
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(ir/f'{ds.names[0]}.png')
    with pytest.raises(ValueError, match=f'{ds.names[0]}.png: the mask is \\(5, 5\\)'): MaskCropDataset(ds, ir)[0]


def test_interrupted_label_writing_resumes(toy, cams, net, tmp_path):
    "A PNG cut short by a kill and a killed writer's temporary file: the next run redoes the one, drops the other."
    out = make_irn_labels(net, cams, toy, out_dir=tmp_path/'irn', exp_times=3, progress=False)
    files = sorted(out.glob('*.png'))
    whole = {p.name: p.read_bytes() for p in files}
    files[0].write_bytes(whole[files[0].name][:40])
    stale = out/f'.{files[0].name}.99999999.tmp'
    stale.write_bytes(b'half')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        make_irn_labels(net, cams, toy, out_dir=out, exp_times=3, progress=False)
    assert any('unreadable' in str(x.message) for x in w)
    assert {p.name: p.read_bytes() for p in out.glob('*.png')} == whole and not stale.exists()


def test_shards_make_the_same_folder(toy, cams, net, tmp_path):
    one = make_irn_labels(net, cams, toy, out_dir=tmp_path/'one', exp_times=3, progress=False)
    for i in range(3): make_irn_labels(net, cams, toy, out_dir=tmp_path/'sh', exp_times=3, shard=f'{i}/3', progress=False)
    read = lambda d: {p.name: load_mask(p).tolist() for p in d.glob('*.png')}
    assert read(tmp_path/'sh') == read(one) and len(read(one)) == len(load_dataset(toy, 'train'))


def test_walk_memory_is_linear_and_equals_dense():
    "The sparse walk never forms the (h·w)² matrix; on random inputs it matches the dense reference."
    g = torch.Generator().manual_seed(1)
    for h, w in [(5, 7), (12, 6)]:
        b = torch.rand(h, w, generator=g, dtype=torch.float64)
        x = torch.rand(3, h, w, generator=g, dtype=torch.float64)
        torch.testing.assert_close(random_walk(x, b, 4, 6, 32), dense_random_walk(x, b, 4, 6, 32), atol=1e-5, rtol=0)


def test_checkpoint_round_trip_and_refusals(toy, cams, tiny_run, tmp_path):
    learn = fit_irn(cams, toy, epochs=1, bs=4, size=48, path=tmp_path, pretrained=False, ir_dir=tmp_path/'ir')
    m = load_irn_model(tmp_path/'models'/'irn.ckpt')
    x = torch.randn(1, 3, 40, 40)
    learn.model.eval()
    with torch.no_grad(): torch.testing.assert_close(m(x), learn.model(x))
    # resume: a finished run is not trained again
    again = fit_irn(cams, toy, epochs=1, bs=4, size=48, path=tmp_path, pretrained=False, ir_dir=tmp_path/'ir', resume=True)
    with torch.no_grad(): torch.testing.assert_close(again.model.eval()(x), m(x))
    with pytest.raises(ValueError, match='not a boundary-network checkpoint'): load_irn_model(tiny_run[2])
    with pytest.raises(FileNotFoundError, match='no checkpoint'): load_irn_model(tmp_path/'none.ckpt')


def test_commands_from_a_shell(toy, cams, tmp_path):
    r = run('pot_irn_train', cams, toy, '--out', tmp_path/'run', '--epochs', '1', '--bs', '4', '--size', '48',
            '--ir_dir', tmp_path/'ir')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'boundary network in' in r.stdout and (tmp_path/'run'/'models'/'irn.ckpt').is_file()
    r = run('pot_irn_labels', tmp_path/'run'/'models'/'irn.ckpt', cams, toy, '--out', tmp_path/'irn', '--exp_times', '3')
    assert r.returncode == 0, r.stderr[-3000:]
    res = evaluate_masks(tmp_path/'irn', toy, 'train')
    assert res['n_images'] == len(load_dataset(toy, 'train')) and res['miou'] > 0.2
    one_error_line(run('pot_irn_train', tmp_path/'none', toy), 'pot_irn_train', 'none')
    one_error_line(run('pot_irn_labels', tmp_path/'x.ckpt', cams, toy), 'pot_irn_labels', 'no checkpoint at')
    one_error_line(run('pot_irn_labels', tmp_path/'run'/'models'/'irn.ckpt', tmp_path/'none', toy), 'pot_irn_labels',
                   'missing')
