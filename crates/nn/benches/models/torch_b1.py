"""Batch-1 inference latency of torch_ref.py's reference models (PyTorch CPU, 2 threads, eval mode,
no_grad): the measurement the calibrate stage makes, beside the batch-100 throughput of
torch_ref.py. Imports the models from ../shared/bench/torch_ref.py (path as the first argument).

Prints one line per model:  torch1 <model> infer1_us=<µs per call>, the median over 5 blocks of
the blocks' mean latencies (<runs> timed calls in all, after a warm-up).
Run: python torch_b1.py /path/to/torch_ref.py <runs> dscnn tcn64 resnet8
"""
import sys, time, importlib.util

spec = importlib.util.spec_from_file_location("torch_ref", sys.argv[1])
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
import torch  # noqa: E402

torch.set_num_threads(2)
RUNS = int(sys.argv[2])
BLOCKS = 5


def build(w):
    torch.manual_seed(0)
    if w.startswith("tcn"):
        return ref.TCN(int(w[3:])), (1, 10, 49)
    if w == "dscnn":
        return ref.DSCNN(), (1, 1, 49, 10)
    if w == "resnet8":
        return ref.ResNet8(), (1, 3, 32, 32)
    if w in ("mbv2", "mbv2_se"):
        return ref.MobileNetV2(se=(w == "mbv2_se")), (1, 3, 32, 32)
    raise SystemExit(f"unknown model {w}")


for w in sys.argv[3:]:
    m, shape = build(w)
    m.eval()
    x = torch.randn(*shape)
    per = max(1, RUNS // BLOCKS)
    means = []
    with torch.no_grad():
        for _ in range(max(10, per // 5)):
            m(x)
        for _ in range(BLOCKS):
            t = time.perf_counter()
            for _ in range(per):
                m(x)
            means.append((time.perf_counter() - t) / per * 1e6)
    means.sort()
    print(f"torch1 {w} infer1_us={means[len(means) // 2]:.1f}", flush=True)
