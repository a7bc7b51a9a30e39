"""Notebooks as users meet them: run top to bottom in a real Jupyter kernel (ipykernel, executed by nbclient through
`jupyter nbconvert --execute`, as JupyterLab's Run All runs them), with the widget comm present and no variable
that switches widgets off. Each run is its own process, with a time limit per cell.

Opt-in (`POT_NB_KERNEL_TESTS=1 pytest tests/test_kernel.py`): about one run in three of the explorer stalls with the
kernel idle and nbclient waiting for a message that never comes (seen in-process and through nbconvert, where the
per-cell time limit does not fire), so this is not yet fit for the default run that gates a merge."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ['13_explorer.ipynb', '19_tutorial_own_dataset.ipynb', '20_tutorial_cam_prior.ipynb']
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'


def run_in_kernel(name, out:Path, tries:int=2)->dict:
    """Execute a copy of the notebook in a fresh python3 kernel; returns the executed notebook. A run that stops on
    the per-cell time limit is tried once more (a kernel message lost on the way is not the notebook's failure);
    a notebook whose cell raises is not retried: nbconvert stops with the error, which the test shows."""
    env = {k: v for k, v in os.environ.items() if k not in ('POT_NB_STATIC', 'IN_TEST')}
    cmd = [sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'notebook', '--execute', str(ROOT/'nbs'/name),
           '--output', str(out), '--ExecutePreprocessor.timeout=150', '--ExecutePreprocessor.kernel_name=python3']
    for attempt in range(tries):
        try: r = subprocess.run(cmd, cwd=ROOT/'nbs', env=env, capture_output=True, text=True, timeout=300,
                                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired: continue                     # a stall the per-cell limit missed: try again
        if r.returncode == 0: return json.loads(out.read_text())
        if 'TimeoutError' not in r.stderr and 'timed out' not in r.stderr: break
    raise AssertionError(f'{name} failed in a real kernel:\n' + (r.stderr[-4000:] if 'r' in locals() else 'timed out'))


@pytest.mark.skipif(os.environ.get('POT_NB_KERNEL_TESTS') != '1', reason='opt-in: POT_NB_KERNEL_TESTS=1 (see the module docstring)')
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_in_a_real_kernel(name, tmp_path):
    nb = run_in_kernel(name, tmp_path/name)
    outputs = [o for c in nb['cells'] for o in c.get('outputs', [])]
    errors = [(o.get('ename'), o.get('evalue')) for o in outputs if o.get('output_type') == 'error']
    assert not errors, errors[:3]
    if name == '13_explorer.ipynb':                     # the live explorer was displayed, not the static fallback
        assert any(WIDGET_VIEW in o.get('data', {}) for o in outputs), 'no widget was displayed'
        state = nb['metadata']['widgets']['application/vnd.jupyter.widget-state+json']['state']
        models = {m['model_name'] for m in state.values()}
        assert {'IntSliderModel', 'SelectionSliderModel', 'ToggleButtonsModel', 'OutputModel'} <= models, models
        printed = ''.join(''.join(o.get('text', '')) for o in outputs if o.get('name') == 'stdout')
        assert 'widget frontend: True' in printed
