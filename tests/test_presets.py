"""One method name, one configuration: every entry point that takes a method name (the library's preset,
`fit_pot`, `pot_train`, `run_methods` / `pot_run`, the explorer) builds the same `POTConfig` for it."""
import subprocess, sys, json
from pathlib import Path
import pytest, torch
from pot_nb.config import METHODS, POTConfig, method_config
from pot_nb.data import make_toy_voc
from pot_nb.train import fit_pot, load_pot_model
from pot_nb.explorer import CAMExplorer
from pot_nb.cli import pot_train

KW = dict(epochs=0, bs=4, size=48, metrics=(), n_valid=4, device='cpu', pretrained=False)

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    return make_toy_voc(tmp_path_factory.mktemp('presets')/'toy', n=8, size=40, seed=0, n_val=4)

def _trained(ckpt): return POTConfig.from_dict(load_pot_model(ckpt, device='cpu').pot_config)

@pytest.mark.parametrize('method', METHODS)
def test_every_entry_point_builds_the_preset(method, toy, tmp_path):
    want = POTConfig.preset(method)
    assert method_config(method) == want
    learners = dict(name=fit_pot(toy, method, path=tmp_path/'a', **KW),                 # the preset's name
                    option=fit_pot(toy, method=method, path=tmp_path/'b', **KW),        # the option
                    command=pot_train(str(toy), out=str(tmp_path/'c'), method=method, epochs=0, bs=4, size=48,
                                      n_valid=4, device='cpu', no_pretrained=True))     # the command's function
    for how, learn in learners.items(): assert POTConfig.from_dict(learn.pot_config) == want, how
    C = 3
    ex = CAMExplorer([torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()], torch.rand(1, 6, 4, 4), torch.rand(1, C, 4, 4),
                     torch.ones(1, C), [f'c{i}' for i in range(C)], method=method)
    assert ex.cfg == want

def test_the_command_line_builds_the_preset(toy, tmp_path):
    "`pot_train --method sipe` from a shell trains SIPE's preset, loss weight 1 included."
    r = subprocess.run([str(Path(sys.executable).parent/'pot_train'), str(toy), '--out', str(tmp_path), '--method', 'sipe',
                        '--epochs', '1', '--bs', '4', '--size', '48', '--n_valid', '4', '--device', 'cpu', '--no_pretrained'],
                       capture_output=True, text=True, timeout=300, env={'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin'})
    assert r.returncode == 0, r.stderr[-2000:]
    assert _trained(tmp_path/'models'/'pot.ckpt') == POTConfig.preset('sipe')
    assert POTConfig.preset('sipe').lam == 1.0

def test_the_pipeline_takes_methods_by_name_only(toy, tmp_path):
    from pot_nb.pipeline import run_methods
    with pytest.raises(ValueError, match='name the methods with `methods`'):
        run_methods(toy, tmp_path, methods=('pot',), changes=dict(method='sipe'))
    for cmd in ('pot_run', 'pot_demo'):
        h = subprocess.run([str(Path(sys.executable).parent/cmd), '--help'], capture_output=True, text=True, timeout=120)
        assert h.returncode == 0 and '--n_clusters' in h.stdout and '--method ' not in h.stdout, cmd
