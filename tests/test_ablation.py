"End to end: `pot_ablate` on a tiny VOC-layout folder — files, resume, table, CRF column."
import json
import numpy as np, pytest, torch
from pot_nb.data import make_toy_voc
from pot_nb.studies.ablation import pot_ablate, load_results, ablation_summary, sweep_confusion, SWEEP


def test_pot_ablate_runs_resumes_and_tabulates(tmp_path, capsys):
    data = make_toy_voc(tmp_path/'toy', n=16, n_val=8, size=96)
    out = tmp_path/'run'
    args = ['--out', str(out), '--data', str(data), '--size', '96', '--bs', '8', '--seeds', '0', '1',
            '--rows', 'cam', 'pot K=2', '--n-eval-train', '8', '--crf-images', '4', '--lr', '0.01']
    res = pot_ablate(args)
    assert sorted(res) == ['cam | seed 0', 'cam | seed 1', 'pot K=2 | seed 0', 'pot K=2 | seed 1']
    for r in res.values():
        assert len(r['val']['cls']) == len(SWEEP) and all(0 <= v <= 1 for v in r['val']['cls'])
        assert r['config']['n_train'] == 16 and r['config']['n_val'] == 8 and r['config']['n_eval_train'] == 8
        assert r['nonfinite'] == 0 and len(r['epoch_s']) == 1
    assert all('crf' in r and 0 <= r['crf'] <= 1 for r in res.values())   # cam row and the best (only) other row
    assert (out/'table.md').read_text().count('| cam | 2 |') == 2          # train and val tables, 2 seeds each
    # different seeds train different heads
    a, b = (torch.load(out/'models'/f'pot_K2_s{s}.pt') for s in (0, 1))
    assert not torch.equal(a['classifier.weight'], b['classifier.weight'])
    # a second call finds every run done: nothing is retrained or rewritten
    stamps = {f: f.stat().st_mtime_ns for f in (out/'models').iterdir()}
    capsys.readouterr()
    again = pot_ablate(args)
    assert {f: f.stat().st_mtime_ns for f in (out/'models').iterdir()} == stamps
    assert {k: v['val'] for k, v in again.items()} == {k: v['val'] for k, v in res.items()}
    summ = ablation_summary(load_results(out))
    assert len(summ['cam']['val cls best']) == 2 and len(summ['pot K=2']['s/epoch']) == 2


def test_sweep_confusion_matches_per_threshold_argmax():
    g = torch.Generator().manual_seed(0)
    fg = torch.rand(3, 4, 9, 11, generator=g) * (torch.rand(3, 4, 1, 1, generator=g) > 0.4)
    gt = torch.randint(0, 5, (3, 9, 11), generator=g); gt[0, 0, :4] = 255
    ts = (0.7, 0.1, 0.5)                                   # any order
    got = sweep_confusion(fg, gt, ts)
    for j, t in enumerate(ts):
        pred = torch.where(fg.max(1).values > t, fg.argmax(1) + 1, 0)
        keep = gt != 255
        ref = np.zeros((5, 5), np.int64)
        np.add.at(ref, (gt[keep].numpy(), pred[keep].numpy()), 1)
        np.testing.assert_array_equal(got[j], ref)
