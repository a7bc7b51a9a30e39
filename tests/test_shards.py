"CAM generation sharded across processes (`--shard i/n`): two shard processes write exactly the files one process writes."
import subprocess, sys
import pytest
from pot_nb.train import load_pot_model
from pot_nb.cams import make_cams

def test_two_shard_processes_equal_one_process(tiny_run, tmp_path):
    root, learn, ckpt = tiny_run
    one = make_cams(load_pot_model(ckpt), root, 'train', out_dir=tmp_path/'one', scales=(1.0, 0.5), progress=False)
    out = tmp_path/'sharded'
    cmd = ('import sys; from pot_nb.cli import pot_cams; '
           f'pot_cams({str(ckpt)!r}, {str(root)!r}, "train", out={str(out)!r}, scales="1.0,0.5", shard=sys.argv[1])')
    procs = [subprocess.Popen([sys.executable, '-c', cmd, f'{i}/2'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]                                   # both at once, into the same folder
    for p in procs:
        log = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, log[-2000:]
    files = sorted(f.name for f in one.glob('*.npy'))
    assert len(files) == 8 and sorted(f.name for f in out.glob('*.npy')) == files
    for f in files: assert (one/f).read_bytes() == (out/f).read_bytes(), f      # byte-identical arrays
    assert not list(out.glob('.*.tmp'))

def test_shards_partition_the_split(tiny_run, tmp_path):
    root, learn, ckpt = tiny_run
    m = load_pot_model(ckpt)
    parts = [set(f.name for f in make_cams(m, root, 'train', out_dir=tmp_path/str(i), scales=(1.0,), shard=f'{i}/3',
                                              progress=False).glob('*.npy')) for i in range(3)]
    assert [len(p) for p in parts] == [3, 3, 2] and not (parts[0] & parts[1]) and not (parts[1] & parts[2])
    with pytest.raises(ValueError, match='shard 3/3 is out of range'): make_cams(m, root, shard='3/3', progress=False)
