"""One training step of each of the package's three networks on the CPU, in PyTorch's default memory layout and in the
channels-last layout the trainers use there (`pot_nb.train.cpu_channels_last`): seconds per step, medians, and
their ratio, measured side by side in one run.

    python scripts/bench_layout.py [--bs 16] [--size 160] [--repeats 5] [--threads 2]
"""
import argparse, time
import numpy as np
import torch


def step_time(model, loss, x, repeats):
    "Median seconds of forward + backward + optimizer step (one warm-up step first)."
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    def step():
        opt.zero_grad(); loss(model(x)).backward(); opt.step()
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=16); p.add_argument('--size', type=int, default=160)
    p.add_argument('--repeats', type=int, default=5); p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from pot_nb.model import POTNet
    from pot_nb.irn import BoundaryNet, affinity_loss
    from pot_nb.seg import SegNet, seg_loss
    torch.manual_seed(0)
    x = torch.randn(a.bs, 3, a.size, a.size)
    mask = torch.randint(0, 4, (a.bs, a.size, a.size))
    nets = {'POTNet (CAM network)': (lambda: POTNet(10, pretrained=False), lambda out: out[0].sum()),
            'BoundaryNet (IRN)': (lambda: BoundaryNet(pretrained=False), lambda out: affinity_loss(out, mask)),
            'SegNet (DeepLabV3+)': (lambda: SegNet(10, pretrained=False), lambda out: seg_loss(out, mask))}
    print(f'| network | default layout, s / step | channels last, s / step | speed-up |  (batch {a.bs}, '
          f'{a.size} px, {a.threads} threads, medians of {a.repeats})\n|---|---:|---:|---:|')
    for name, (make, loss) in nets.items():
        model = make().train()
        base = step_time(model, loss, x, a.repeats)
        last = step_time(model.to(memory_format=torch.channels_last), loss, x, a.repeats)
        print(f'| {name} | {base:.3f} | {last:.3f} | {base / last:.2f}x |', flush=True)


if __name__ == '__main__': main()
