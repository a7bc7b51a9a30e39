"""Notebooks as users meet them: run top to bottom in a real Jupyter kernel (ipykernel, executed by nbclient as
JupyterLab's Run All runs them), with the widget comm present and no variable that switches widgets off. Each run is
its own process (`tests/kernel_run.py`, which explains how it polls the kernel), with a time limit per cell."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ['index.ipynb', '13_explorer.ipynb', 'studies/17_real_photos.ipynb', '18_voc_recipe.ipynb',
             '19_tutorial_own_dataset.ipynb', '20_tutorial_cam_prior.ipynb']
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'


def run_in_kernel(name, out:Path)->dict:
    "Execute a copy of notebook `name` in a fresh python3 kernel; returns the executed notebook."
    env = {k: v for k, v in os.environ.items() if k not in ('POT_NB_STATIC', 'IN_TEST')}
    env['OMP_NUM_THREADS'] = env.get('OMP_NUM_THREADS', '1')
    r = subprocess.run([sys.executable, str(ROOT/'tests'/'kernel_run.py'), str(ROOT/'nbs'/name), str(out)],
                       env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f'{name} failed in a real kernel:\n{r.stderr[-4000:]}'
    return json.loads(out.read_text())


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_in_a_real_kernel(name, tmp_path):
    nb = run_in_kernel(name, tmp_path/Path(name).name)
    outputs = [o for c in nb['cells'] for o in c.get('outputs', [])]
    errors = [(o.get('ename'), o.get('evalue')) for o in outputs if o.get('output_type') == 'error']
    assert not errors, errors[:3]
    assert all(c.get('execution_count') for c in nb['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).strip())
    if name == '13_explorer.ipynb':                     # the live explorer was displayed, not the static fallback
        assert any(WIDGET_VIEW in o.get('data', {}) for o in outputs), 'no widget was displayed'
        state = nb['metadata']['widgets']['application/vnd.jupyter.widget-state+json']['state']
        models = {m['model_name'] for m in state.values()}
        assert {'IntSliderModel', 'SelectionSliderModel', 'ToggleButtonsModel', 'OutputModel'} <= models, models
        printed = ''.join(''.join(o.get('text', '')) for o in outputs if o.get('name') == 'stdout')
        assert 'widget frontend: True' in printed


def test_a_failing_cell_is_one_line_naming_the_notebook(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1'), nbformat.v4.new_code_cell('1/0')])
    src = tmp_path/'bad.ipynb'; nbformat.write(nb, src)
    r = subprocess.run([sys.executable, str(ROOT/'tests'/'kernel_run.py'), str(src), str(tmp_path/'out.ipynb')],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f'{src}: CellExecutionError') and 'ZeroDivisionError' in last, last
    out = nbformat.read(tmp_path/'out.ipynb', as_version=4)            # what ran is kept
    assert out.cells[0].execution_count == 1
