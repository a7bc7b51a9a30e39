"""Several processes: `fit_pot` under torchrun with the gloo backend, 2 CPU processes. Both end with identical weights,
equal to what rank 0 checkpointed, and only rank 0 writes checkpoint files."""
import os, socket, subprocess, sys, textwrap
import pytest
import torch

pytest.importorskip('accelerate', reason="fastai's DistributedTrainer needs accelerate (a package requirement)")

WORKER = textwrap.dedent('''
    import os, sys, threading, torch
    watchdog = threading.Timer(280, lambda: os._exit(3)); watchdog.daemon = True; watchdog.start()  # never outlive the test
    from pot_nb.train import fit_pot, unwrap_model
    root, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ['RANK'])
    learn = fit_pot(root, epochs=2, bs=2, size=48, n_clusters=2, path=f'{out}/rank{rank}', n_valid=4, device='cpu', seed=0)
    assert torch.distributed.get_world_size() == 2
    torch.save({'weights': unwrap_model(learn).state_dict(), 'iters': learn.train_iter, 'values': learn.recorder.values},
               f'{out}/final{rank}.pt')
''')

@pytest.mark.slow
def test_fit_pot_gloo_two_processes(tiny_run, tmp_path):
    root, learn, ckpt = tiny_run
    (tmp_path/'worker.py').write_text(WORKER)
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]   # a free port for the rendezvous
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(port),
                        str(tmp_path/'worker.py'), str(root), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    f0, f1 = (torch.load(tmp_path/f'final{i}.pt', weights_only=False) for i in (0, 1))
    assert f0['iters'] == f1['iters'] == 4            # 8 images, 2 processes x batch 2: 2 steps per epoch, 2 epochs
    for k, v in f0['weights'].items(): assert torch.equal(v, f1['weights'][k]), k
    assert f0['values'] == f1['values']              # validation metrics summed over both processes' shares
    # only rank 0 wrote checkpoints, and they hold the final weights
    assert sorted(p.name for p in (tmp_path/'rank0'/'models').iterdir()) == ['pot.ckpt', 'pot.pth']
    assert not (tmp_path/'rank1'/'models').exists() or not any((tmp_path/'rank1'/'models').iterdir())
    st = torch.load(tmp_path/'rank0'/'models'/'pot.ckpt', weights_only=False)
    assert st['epoch'] == 2
    for k, v in f0['weights'].items(): assert torch.equal(v, st['model'][k]), k
    # and training moved the weights
    assert any(not torch.equal(v, learn.model.state_dict()[k]) for k, v in f0['weights'].items() if v.is_floating_point())
