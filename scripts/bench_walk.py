"""Speed and memory of IRN's random walk (`pot_nb.irn.walk_cams`) at VOC size and at 1024×768.

    python scripts/bench_walk.py [--device cpu|cuda] [--repeats 3] [--classes 3] [--exp_times 8]

Each size runs in a fresh process so that its peak memory is its own: on the CPU the growth of the peak resident set
over the process's state just before the walk, on a GPU `torch.cuda.max_memory_allocated`. The dense walk that IRN's
`propagate_to_edge` runs is not timed here (squaring a 13,520² matrix takes hours on a CPU); its memory is what its
matrices need: the padded (h·w)² float32 matrix, held about four times over (affinity, its power, the transition
matrix, the product while squaring). Prints a markdown table; the figures are medians of `--repeats` runs.
"""
import argparse, json, os, resource, subprocess, sys, time


def one(h, w, k, exp_times, repeats, device):
    import torch
    from pot_nb.irn import walk_cams
    torch.manual_seed(0)
    dev = torch.device(device)
    h4, w4 = -(-h // 4), -(-w // 4)
    b = torch.nn.functional.avg_pool2d(torch.rand(1, 1, h4 + 4, w4 + 4), 5, 1)[0, 0].to(dev)   # a smooth boundary map
    cams = torch.rand(k, h, w).to(dev)
    walk_cams(cams, b[:8, :8].contiguous(), exp_times=1)                                         # warm up
    if dev.type == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        walk_cams(cams, b, exp_times=exp_times)
        if dev.type == 'cuda': torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if dev.type == 'cuda'
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
    times.sort()
    return dict(s=times[len(times) // 2], peak=peak)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu'); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--classes', type=int, default=3); p.add_argument('--exp_times', type=int, default=8)
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        h, w = map(int, a.one.split('x'))
        print(json.dumps(one(h, w, a.classes, a.exp_times, a.repeats, a.device))); return
    rows = []
    for w, h in [(500, 375), (1024, 768)]:
        r = subprocess.run([sys.executable, __file__, '--one', f'{h}x{w}', '--device', a.device, '--repeats', str(a.repeats),
                            '--classes', str(a.classes), '--exp_times', str(a.exp_times)],
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        n = ((-(-h // 4)) + 5) * ((-(-w // 4)) + 10)                  # IRN pads the grid by the radius (5)
        rows.append((f'{w}×{h}', res['s'], 1 / res['s'], res['peak'] / 2**20, n * n * 4 / 2**30, 4 * n * n * 4 / 2**30))
    print(f'random walk, {a.classes} classes, {2 ** a.exp_times} steps (exp_times {a.exp_times}), radius 5, on {a.device} '
          f'({os.environ.get("OMP_NUM_THREADS", "all")} threads), median of {a.repeats}\n')
    print('| image | s / image | images / s | peak memory, sparse (MiB) | dense matrix, one copy (GiB) | dense, ~4 copies (GiB) |')
    print('|---|---:|---:|---:|---:|---:|')
    for r in rows: print(f'| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.0f} | {r[4]:.2f} | {r[5]:.1f} |')


if __name__ == '__main__':
    main()
