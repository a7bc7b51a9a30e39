"""Run a notebook top to bottom in a fresh ipykernel through nbclient, as JupyterLab's Run All does, and write the
executed copy: `python tests/kernel_run.py IN.ipynb OUT.ipynb [--timeout S]`. Exit 0 when every cell ran, 1 with one
line naming the failing cell otherwise.

Why not `jupyter nbconvert --execute`: nbclient waits for kernel replies with `await socket.poll(timeout)` on
pyzmq's asyncio sockets. After a burst of widget comm traffic (the explorer's cells that move sliders from code) the
socket's edge-triggered wake-up is sometimes lost: the reply is already there, but the poll only sees it when its
timeout runs out, so a cell that took 0.1 s is reported after the full per-cell limit (measured: 4 of 4 runs of
13_explorer either finished in ~20 s or sat exactly 150 s on one such cell). Polling in short slices finds a
waiting message within `SLICE` seconds, and the per-cell limit still holds."""
import argparse, asyncio, os, sys, time
from pathlib import Path
from queue import Empty
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

SLICE = 0.5     # seconds: the longest a lost wake-up can delay a message


def sliced(get_msg):
    "Wrap a channel's async `get_msg(timeout)` so that it polls at most `SLICE` seconds at a time."
    async def get(timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0., deadline - time.monotonic()))
            try: return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline: raise
    return get


class SlicedClient(NotebookClient):
    "`NotebookClient` whose shell and iopub channels are polled in slices (see the module docstring)."
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for ch in (kc.shell_channel, kc.iopub_channel): ch.get_msg = sliced(ch.get_msg)
        return kc


def run(src:Path, dst:Path, timeout:int=150)->nbformat.NotebookNode:
    "Execute `src` in a fresh python3 kernel started in its folder; write the executed notebook to `dst`."
    nb = nbformat.read(src, as_version=4)
    env = {k: v for k, v in os.environ.items() if k not in ('POT_NB_STATIC', 'IN_TEST')}
    client = SlicedClient(nb, timeout=timeout, kernel_name='python3',
                          resources={'metadata': {'path': str(Path(src).resolve().parent)}})
    try: client.execute(env=env)
    finally: nbformat.write(nb, dst)
    return nb


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src'); p.add_argument('dst'); p.add_argument('--timeout', type=int, default=150)
    a = p.parse_args()
    try: run(Path(a.src), Path(a.dst), a.timeout)
    except (CellExecutionError, CellTimeoutError) as e:
        first = [l for l in str(e).splitlines() if l.strip()]
        sys.exit(f'{a.src}: {type(e).__name__}: ' + (first[-1] if first else ''))
