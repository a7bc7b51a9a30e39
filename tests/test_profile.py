"pot_bench: the step profile's parts are real, positive and add up; the timing wrappers are removed; the tables and JSON."
import contextlib, io, json, time
import pytest
import torch
import pot_nb.prototypes, pot_nb.cluster, pot_nb.ot
from pot_nb.prototypes import two_part_example
from pot_nb.train import POTLoss
from pot_nb.studies.profile import (StepClock, timed_functions, bench_model, bench_batch, profile_step, profile_training,
                            step_table, cam_throughput, throughput_table, machine_info, pot_bench, STEP_PARTS, POT_SHARE)


def test_timed_functions_counts_and_restores():
    before = (pot_nb.prototypes.prototype_cams, pot_nb.cluster.batched_kmeans, pot_nb.ot.sinkhorn,
              pot_nb.prototypes.cluster_seeds, pot_nb.prototypes.sinkhorn)
    ex = two_part_example()
    clk = StepClock()
    with timed_functions(clk):
        assert pot_nb.prototypes.prototype_cams is not before[0]           # wrapped where it is looked up
        pot_nb.prototypes.prototype_cams(ex['feat'], ex['cam'], ex['labels'], n_clusters=2)
    assert (pot_nb.prototypes.prototype_cams, pot_nb.cluster.batched_kmeans, pot_nb.ot.sinkhorn,
            pot_nb.prototypes.cluster_seeds, pot_nb.prototypes.sinkhorn) == before
    assert clk.calls['prototype_cams'] == 1 and clk.calls['clustering'] >= 1 and clk.calls['ot'] >= 1
    assert clk.parts['prototype_cams'] > clk.parts['clustering'] + clk.parts['ot'] > 0


def test_timed_functions_measures_a_known_delay():
    "A part that sleeps 50 ms is reported as about 50 ms (the wrapper measures what runs inside it)."
    clk = StepClock()
    orig = pot_nb.ot.sinkhorn
    def slow(*a, **k): time.sleep(0.05); return orig(*a, **k)
    pot_nb.ot.sinkhorn = slow
    try:
        with timed_functions(clk, {'ot': ('sinkhorn',)}):
            c = torch.rand(1, 4, 2); a = torch.full((1, 4), 0.25); b = torch.full((1, 2), 0.5)
            pot_nb.ot.sinkhorn(c, a, b)
    finally: pot_nb.ot.sinkhorn = orig
    assert 0.05 <= clk.parts['ot'] < 0.5


@pytest.fixture(scope='module')
def step_setup():
    m = bench_model('resnet50', n_classes=3, pretrained=False)
    x, y = bench_batch(2, 64, m.norm)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    return m, x, y, opt


def test_profile_step_parts(step_setup):
    m, x, y, opt = step_setup
    assert x.shape == (2, 3, 64, 64) and y.shape == (2, 3) and bool((y.sum(1) >= 1).all())
    profile_step(m, x, y, POTLoss('pot'), opt)                                   # warm-up
    r = profile_step(m, x, y, POTLoss('pot', n_clusters=3, lam=0.5, detach='none'), opt)   # the paper's step
    for k in STEP_PARTS: assert r[k] > 0, k
    assert sum(r[k] for k in STEP_PARTS) == pytest.approx(r['total'], rel=1e-9)
    assert r['net_bwd'] > r['loss_bwd'] and r['backbone_fwd'] > r['heads_fwd']   # ResNet-50 dominates its own step
    assert r['groups'] == 2 + int(y.sum()) and r['kmeans_iters'] >= 1 and r['ot_iters'] >= 1
    rc = profile_step(m, x, y, POTLoss('cam'), opt)                              # no prototype step at all
    assert rc['clustering'] == rc['ot'] == rc['prototype_cams'] == 0 and rc['groups'] == 0


def test_profile_training_and_table():
    res = profile_training(arch=['lite0'], batch=[2], size=[64], repeats=2, baseline=True)
    (r,) = res['rows']
    assert (r['arch'], r['size'], r['batch'], r['amp']) == ('lite0', 64, 2, False)
    for k in STEP_PARTS: assert r[k] > 0, k
    assert sum(r[k] for k in STEP_PARTS) == pytest.approx(r['total'], rel=1e-9)
    assert r['pot_share'] == pytest.approx(sum(r[k] for k in POT_SHARE) / r['total'])
    assert 0 < r['pot_share'] < 1 and r['plain'] > 0 and r['plain_cam'] > 0
    assert r['plain'] / 3 < r['total'] < r['plain'] * 3                          # instrumented ≈ plain on the CPU
    t = step_table(res).splitlines()
    assert t[0].startswith('| arch | px | B | amp |') and 'POT overhead' in t[0]
    assert t[0].count('|') == t[1].count('|') == t[2].count('|')
    assert t[2].startswith('| lite0 | 64 | 2 | no |')
    assert 'torch ' in t[-1] and res['machine']['cpu'] in t[-1]


def test_amp_step_on_cpu():
    "--amp on a CPU autocasts the network to bfloat16; the loss still runs (in float32) and the parts add up."
    res = profile_training(arch=['lite0'], batch=[2], size=[32], repeats=1, amp=True, memory=False)
    (r,) = res['rows']
    assert r['amp'] and r['clustering'] > 0 and r['ot'] > 0 and 'peak_mib' not in r
    assert '| bf16 |' in step_table(res)


def test_cam_throughput():
    rows = cam_throughput('lite0', n_images=2, size=48)
    assert [(r['stage'], r['kind']) for r in rows] == [('cams', 'cls'), ('cams', 'proto'), ('eval', 'proto')]
    assert all(r['images'] == 2 and r['images_per_s'] > 0 and r['seconds'] > 0 for r in rows)
    t = throughput_table(rows, machine_info()).splitlines()
    assert len([l for l in t if l.startswith('| CAM generation')]) == 2 and 'torch' in t[-1]


def test_pot_bench_cli(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        pot_bench(arch=['lite0'], batch=[2], size=[32], repeats=1, cam_images=1, cam_size=32, json=str(tmp_path/'b.json'))
    out = buf.getvalue()
    assert '| arch | px | B |' in out and '| stage | arch |' in out
    saved = json.loads((tmp_path/'b.json').read_text())
    assert len(saved['steps']) == 1 and len(saved['throughput']) == 3 and saved['machine']['torch'] == torch.__version__
    with pytest.raises(ValueError, match='pretrained'): pot_bench(pretrained='maybe', cam_images=0)
