"""Speed (and peak memory) of pivad's models on CPU, side by side with the official UR-DMU.

    python benchmarks/bench_models.py [--reference PATH] [--json out.json] [--repeats 5]

Cases, all on the same inputs in one process:
  eval_10crop_T200    eval of one 10-crop video, T=200 snippets      [1, 10, 200, 1024]
  eval_1crop_T6749    eval of one crop of the longest UCF test video  [1, 6749, 1024]
  train_step_128x200  forward + L_MIL + backward + Adam, 64 normal + 64 abnormal crops of 200 snippets
With ``--reference PATH`` (a checkout of henrryzh1/UR-DMU) the official model and loss run too, on the
same weights and inputs: its hard ``.cuda()`` calls are made no-ops in this process (nothing in the
checkout is edited), its outputs are checked against pivad's, and ratios official/pivad are printed
(median over repeats after a warm-up; the two run alternately so machine load hits both alike).
Peak memory is measured in fresh subprocesses (peak RSS over the RSS before the forward call).
The 2048² matmul peak (fp32, bf16; benchmarks/peak.py) is measured at the start and the end of the run
(the better of the two counts), every runner's FLOPs are counted once (FlopCounterMode, CPU attention
included), and each case is also given as a fraction of the peak of its dtype, with the load average.
π-VAD (default ``Config()``, see ``pivad_cases``) runs on the same inputs and is compared with pivad's
UR-DMU in a second table; its train step is taken at 8+8 crops x 200 (64+64 does not fit in 23 GB RAM),
against a UR-DMU step on the same 16 crops.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from peak import count_flops, load_average, matmul_peak
from pivad.config import URDMUConfig
from pivad.losses.mil import mil_loss
from pivad.models import URDMU
from pivad.models.urdmu import pivad_to_official

T_LONG = 6749  # longest UCF-Crime test video, in snippets


# ------------------------------------------------------------------------------- official reference


def import_official(path: Path) -> types.SimpleNamespace:
    """Import the official ``model.WSAD`` and ``train.AD_Loss`` from a checkout, CPU-only, unedited."""
    for name in ("ipdb", "visdom"):  # imported at module level by the official files, unused here
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["visdom"].Visdom = object  # type: ignore[attr-defined]
    # the official forward and loss call .cuda() on fresh tensors: identity on a CPU-only run
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    sys.path.insert(0, str(path))
    try:
        import model as official_model  # noqa: PLC0415
        import train as official_train  # noqa: PLC0415
    finally:
        sys.path.remove(str(path))
    return types.SimpleNamespace(WSAD=official_model.WSAD, AD_Loss=official_train.AD_Loss)


def official_net(ref: types.SimpleNamespace, sd: dict) -> torch.nn.Module:
    net = ref.WSAD(input_size=1024, flag="Test", a_nums=60, n_nums=60)
    net.load_state_dict(sd)
    return net


def official_deterministic(net: torch.nn.Module) -> Callable[[], None]:
    """Dropout p=0 and zero reparameterisation noise (the golden README's patches); returns an undo."""
    drops = [(m, m.p) for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    for m, _ in drops:
        m.p = 0.0
    randn_like = torch.randn_like
    torch.randn_like = torch.zeros_like  # type: ignore[assignment]

    def undo() -> None:
        torch.randn_like = randn_like  # type: ignore[assignment]
        for m, p in drops:
            m.p = p

    return undo


# ---------------------------------------------------------------------------------------- π-VAD


PIVAD_TRAIN_PER_CLASS = 8  # π-VAD train step: 8 normal + 8 abnormal crops (the full 64+64 OOMs in 23 GB)
PIVAD_TRAIN_CASE = f"train_step_{2 * PIVAD_TRAIN_PER_CLASS}x200"


def pivad_train_batch(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``PIVAD_TRAIN_PER_CLASS`` normal and abnormal crops of the UR-DMU train input, and labels."""
    x = inputs["train_step_128x200"]  # (128, 200, 1024), normal half first
    n = PIVAD_TRAIN_PER_CLASS
    x = torch.cat([x[:n], x[64 : 64 + n]])  # (2n, 200, 1024)
    return x, torch.cat([torch.zeros(n), torch.ones(n)]).long()


def pivad_cases(inputs: dict[str, torch.Tensor], teacher: URDMU | None = None) -> dict[str, Callable[[], object]]:
    """π-VAD cases keyed like the UR-DMU ones (same inputs), default ``Config()``.

    Eval runs the RGB-only ``student_only()`` model under ``no_grad``. ``train_step_128x200`` is one
    step-2 step (forward with random modality features of the config's widths, ``pivad_loss`` L_second,
    backward, Adam over the trainable parameters) at ``PIVAD_TRAIN_CASE``'s smaller batch, not 128 crops.
    """
    from pivad.config import Config  # noqa: PLC0415
    from pivad.losses.inductor import pivad_loss  # noqa: PLC0415
    from pivad.models import build_model  # noqa: PLC0415

    cfg = Config()
    torch.manual_seed(0)
    model = build_model("pivad", cfg)
    if teacher is not None:
        model.student.load_state_dict(teacher.state_dict())
    model.set_teacher(teacher if teacher is not None else URDMU(cfg.model))
    infer = copy.deepcopy(model).student_only()  # its own weights: the train step below moves the model's

    def run_eval(x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            infer.eval()
            with torch.no_grad():
                return infer(x)

        return fn

    x, labels = pivad_train_batch(inputs)
    g = torch.Generator().manual_seed(1)
    mods = {m.name: torch.randn(x.shape[0], x.shape[1], m.dim, generator=g) for m in cfg.data.modalities}  # (B, T, d_j)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr, betas=(0.9, 0.999), weight_decay=cfg.train.weight_decay)

    def train_step() -> float:
        model.train()
        total, _ = pivad_loss(model(x, modalities=mods, phase="second"), labels, cfg.loss, "second")
        opt.zero_grad()
        total.backward()
        opt.step()
        return total.item()

    return {
        "eval_10crop_T200": run_eval(inputs["eval_10crop_T200"]),
        "eval_1crop_T6749": run_eval(inputs["eval_1crop_T6749"]),
        "train_step_128x200": train_step,
    }


def urdmu_small_train_step(model: URDMU, inputs: dict[str, torch.Tensor]) -> Callable[[], float]:
    """pivad's UR-DMU train step on π-VAD's smaller batch, so the train ratio compares like with like."""
    net = URDMU(model.cfg)
    net.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=5e-5)
    x, labels = pivad_train_batch(inputs)

    def train_step() -> float:
        net.train()
        total, _ = mil_loss(net(x), labels)
        opt.zero_grad()
        total.backward()
        opt.step()
        return total.item()

    return train_step


# ------------------------------------------------------------------------------------------ cases


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "eval_10crop_T200": torch.rand(1, 10, 200, 1024, generator=g) * 2,
        "eval_1crop_T6749": torch.rand(1, T_LONG, 1024, generator=g) * 2,
        "train_step_128x200": torch.rand(128, 200, 1024, generator=g) * 2,
    }


TRAIN_LABELS = torch.cat([torch.zeros(64), torch.ones(64)]).long()


def pivad_runners(model: URDMU, inputs: dict, dtype: torch.dtype = torch.float32) -> dict[str, Callable]:
    eval_model = model

    def run_eval(x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            eval_model.eval()
            with torch.no_grad():  # as the official side
                return eval_model(x.to(dtype)).float()

        return fn

    train_model = URDMU(model.cfg)
    train_model.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(train_model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=5e-5)

    def train_step() -> float:
        train_model.train()
        total, _ = mil_loss(train_model(inputs["train_step_128x200"]), TRAIN_LABELS)
        opt.zero_grad()
        total.backward()
        opt.step()
        return total.item()

    return {
        "eval_10crop_T200": run_eval(inputs["eval_10crop_T200"]),
        "eval_1crop_T6749": run_eval(inputs["eval_1crop_T6749"]),
        "train_step_128x200": train_step,
    }


def official_runners(ref, sd: dict, inputs: dict) -> dict[str, Callable]:
    net = official_net(ref, sd)

    def run_eval(x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            net.eval()
            net.flag = "Test"
            with torch.no_grad():  # as the official ucf_test.py
                return net(x)["frame"]

        return fn

    train_net = official_net(ref, sd)
    criterion = ref.AD_Loss()
    opt = torch.optim.Adam(train_net.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=5e-5)

    def train_step() -> float:  # the official train.train() minus its visdom plotting
        train_net.train()
        train_net.flag = "Train"
        cost, _ = criterion(train_net(inputs["train_step_128x200"]), TRAIN_LABELS)
        opt.zero_grad()
        cost.backward()
        opt.step()
        return cost.item()

    return {
        "eval_10crop_T200": run_eval(inputs["eval_10crop_T200"]),
        "eval_1crop_T6749": run_eval(inputs["eval_1crop_T6749"]),
        "train_step_128x200": train_step,
    }


def check_agreement(ref, sd: dict, model: URDMU, inputs: dict, train: bool = True) -> dict[str, float]:
    """Max |score difference| in eval; max relative loss-part difference in one deterministic train step."""
    net = official_net(ref, sd)
    out = {}
    for case in ("eval_10crop_T200", "eval_1crop_T6749"):
        net.eval()
        net.flag = "Test"
        model.eval()
        with torch.no_grad():
            a = net(inputs[case])["frame"]
            b = model(inputs[case])
        out[case] = float((a - b).abs().max())
    if not train:
        return out
    x = inputs["train_step_128x200"]
    net.train()
    net.flag = "Train"
    undo = official_deterministic(net)
    try:
        _, ref_parts = ref.AD_Loss()(net(x), TRAIN_LABELS)
    finally:
        undo()
    det = URDMU(URDMUConfig(**{**model.cfg.__dict__, "dropout": 0.0}))
    det.load_state_dict(model.state_dict())
    _, parts = mil_loss(det.train()(x, sample=False), TRAIN_LABELS)
    out["train_step_128x200"] = max(abs(float(parts[k].detach()) / float(v.detach()) - 1) for k, v in ref_parts.items())
    return out


# ------------------------------------------------------------------------------------------ timing


def time_alternating(runners: dict[str, Callable], repeats: int, min_round_s: float = 1.0) -> tuple[dict, dict]:
    """Run each runner once to warm up, then ``repeats`` rounds in turn (so load changes hit all alike).

    Cases quicker than ``min_round_s`` run several times per round (the same count for every runner
    of a case, at most 10). Returns wall seconds and process CPU seconds (all threads) per call.
    """
    warm = {}
    for name, fn in runners.items():
        t0 = time.perf_counter()
        fn()
        warm[name] = time.perf_counter() - t0
    slowest: dict[str, float] = {}
    for name, t in warm.items():
        case = name.split("/", 1)[1]
        slowest[case] = max(slowest.get(case, 0.0), t)
    inner = {name: max(1, min(10, round(min_round_s / slowest[name.split("/", 1)[1]]))) for name in runners}
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            for _ in range(inner[name]):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return wall, cpu


# ------------------------------------------------------------------------------------------ memory


def memory_probe(impl: str, T: int, reference: str | None, dtype: str) -> None:
    """Child process: print the peak RSS growth (MiB) of one eval forward of one crop of T snippets."""
    torch.manual_seed(0)
    x = torch.rand(1, T, 1024).to(getattr(torch, dtype))
    if impl == "official":
        ref = import_official(Path(reference))
        net = ref.WSAD(input_size=1024, flag="Test", a_nums=60, n_nums=60).eval()
        fn = lambda: net(x)["frame"]  # noqa: E731
    else:
        model = URDMU().to(getattr(torch, dtype)).eval()
        fn = lambda: model(x)  # noqa: E731
    base = _proc_status_mib("VmRSS")
    with torch.no_grad():
        fn()
    # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak over fork + exec)
    print(json.dumps({"peak_mib": round(_proc_status_mib("VmHWM") - base, 1)}))


def _proc_status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} (the memory probe needs Linux)")


def measure_memory(impl: str, T: int, reference: str | None, dtype: str = "float32") -> float | None:
    cmd = [sys.executable, __file__, "--_memory-probe", impl, str(T), "--dtype", dtype]
    if reference:
        cmd += ["--reference", reference]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"memory probe {impl} T={T} failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", help="checkout of the official UR-DMU (henrryzh1/UR-DMU)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--skip-train", action="store_true", help="leave out the training step (slow)")
    p.add_argument("--skip-pivad", action="store_true", help="leave out the π-VAD cases (the slowest)")
    p.add_argument("--memory-T", type=int, nargs="*", default=[T_LONG, 50_000], help="T for the memory probes")
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--_memory-probe", nargs=2, metavar=("IMPL", "T"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_probe:
        memory_probe(args._memory_probe[0], int(args._memory_probe[1]), args.reference, args.dtype)
        return 0

    torch.manual_seed(0)
    model = URDMU().eval()
    inputs = make_inputs()
    cases = ["eval_10crop_T200", "eval_1crop_T6749"] + ([] if args.skip_train else ["train_step_128x200"])
    runners = {f"pivad/{k}": v for k, v in pivad_runners(model, inputs).items() if k in cases}
    bf16 = pivad_runners(copy.deepcopy(model).to(torch.bfloat16), inputs, torch.bfloat16)
    for k in ("eval_10crop_T200", "eval_1crop_T6749"):
        runners[f"pivad-bf16/{k}"] = bf16[k]
    pv_cases = {} if args.skip_pivad else {k: v for k, v in pivad_cases(inputs, model).items() if k in cases}
    for k, fn in pv_cases.items():
        runners[f"pi-vad/{k}"] = fn
    if "train_step_128x200" in pv_cases:
        runners[f"pivad/{PIVAD_TRAIN_CASE}"] = urdmu_small_train_step(model, inputs)
    if not pv_cases and not args.skip_pivad:
        print("π-VAD: not measured (pivad_cases() in benchmarks/bench_models.py is not filled yet)", file=sys.stderr)
    result: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        "repeats": args.repeats,
    }
    if args.reference:
        ref = import_official(Path(args.reference))
        sd = pivad_to_official(model.state_dict())
        for k, v in official_runners(ref, sd, inputs).items():
            if k in cases:
                runners[f"official/{k}"] = v
        result["agreement"] = check_agreement(ref, sd, model, inputs, train=not args.skip_train)
    with torch.no_grad():
        ref32 = {k: model.eval()(inputs[k]) for k in ("eval_10crop_T200", "eval_1crop_T6749")}
        result["bf16_max_abs_score_diff"] = {k: float((bf16[k]() - v).abs().max()) for k, v in ref32.items()}

    peaks = {str(dt).removeprefix("torch."): matmul_peak(dt) for dt in (torch.float32, torch.bfloat16)}
    load = [load_average()]
    flops = {k: count_flops(fn) for k, fn in runners.items()}  # eval runners disable autograd themselves
    wall, cpu = time_alternating(runners, args.repeats)
    load.append(load_average())
    for dt in (torch.float32, torch.bfloat16):  # the peak again at the end: the better of the two counts
        again, name = matmul_peak(dt), str(dt).removeprefix("torch.")
        peaks[name] = max(peaks[name], again, key=lambda p: p["gflops"])
    result["matmul_peak"], result["load_average"], result["flops"] = peaks, load, flops
    result["fraction_of_peak"] = {
        k: flops[k] / statistics.median(v) / 1e9 / peaks["bfloat16" if "bf16" in k else "float32"]["gflops"]
        for k, v in wall.items()
    }
    result["seconds_median"] = {k: statistics.median(v) for k, v in wall.items()}
    result["cpu_seconds_median"] = {k: statistics.median(v) for k, v in cpu.items()}
    result["seconds_all"] = wall
    result["cpu_seconds_all"] = cpu
    memory = {}
    for T in args.memory_T:
        memory[f"pivad/T{T}"] = measure_memory("pivad", T, args.reference)
        if args.reference and T <= T_LONG:
            memory[f"official/T{T}"] = measure_memory("official", T, args.reference)
    result["peak_memory_mib"] = memory
    print(render(result, cases))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def render(result: dict, cases: list[str]) -> str:
    med, cpu = result["seconds_median"], result["cpu_seconds_median"]
    agree = result.get("agreement", {})
    frac, peaks = result["fraction_of_peak"], result["matmul_peak"]
    lines = [f"matmul peak 2048²: fp32 {peaks['float32']['gflops']} GFLOP/s, bf16 {peaks['bfloat16']['gflops']} GFLOP/s "
             f"({peaks['float32']['threads']} threads); load average {' -> '.join(result['load_average'])}", "",
             "| case | official (s) | pivad fp32 (s) | speed-up wall | speed-up CPU time | pivad bf16 (s) | bf16 vs official fp32 "
             "| π-VAD (s) | max diff vs official | % of peak: official / pivad fp32 / bf16 (of the bf16 peak) | GFLOP official / pivad |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cases:
        off, own = med.get(f"official/{c}"), med.get(f"pivad/{c}")
        bf, pv = med.get(f"pivad-bf16/{c}"), med.get(f"pi-vad/{c}")
        ratio = f"{off / own:.2f}x" if off and own else "-"
        c_off, c_own = cpu.get(f"official/{c}"), cpu.get(f"pivad/{c}")
        c_ratio = f"{c_off / c_own:.2f}x" if c_off and c_own else "-"
        diff = agree.get(c)
        diff_s = "-" if diff is None else (f"{diff:.1e} (rel, losses)" if c.startswith("train") else f"{diff:.1e}")
        pv_s = f"{_fmt(pv)} ({PIVAD_TRAIN_CASE[len('train_step_'):]})" if pv and c.startswith("train") else _fmt(pv)
        bf_ratio = f"{off / bf:.2f}x" if off and bf else "-"
        pct = " / ".join("-" if f"{k}/{c}" not in frac else f"{100 * frac[f'{k}/{c}']:.0f}%"
                         for k in ("official", "pivad", "pivad-bf16"))  # fmt: skip
        gf = " / ".join("-" if f"{k}/{c}" not in result["flops"] else f"{result['flops'][f'{k}/{c}'] / 1e9:.1f}"
                        for k in ("official", "pivad"))  # fmt: skip
        lines.append(f"| {c} | {_fmt(off)} | {_fmt(own)} | {ratio} | {c_ratio} | {_fmt(bf)} | {bf_ratio} | {pv_s} "
                     f"| {diff_s} | {pct} | {gf} |")
    lines.append("")
    lines += render_pivad(result, cases)
    lines.append("bf16 max |score - fp32 score|: " + ", ".join(f"{k} {v:.1e}" for k, v in result["bf16_max_abs_score_diff"].items()))
    mem = result.get("peak_memory_mib", {})
    if mem:
        lines.append("peak memory of one eval forward, one crop (MiB over the RSS before it): "
                     + ", ".join(f"{k} {'-' if v is None else v}" for k, v in mem.items()))
    return "\n".join(lines)


SNIPPETS = {"eval_10crop_T200": 10 * 200, "eval_1crop_T6749": T_LONG, "train_step_128x200": 128 * 200,
            PIVAD_TRAIN_CASE: 2 * PIVAD_TRAIN_PER_CLASS * 200}


def render_pivad(result: dict, cases: list[str]) -> list[str]:
    """π-VAD against pivad's UR-DMU, same run: seconds, snippets/s (crop-snippets), π-VAD/UR-DMU time ratios."""
    med, cpu = result["seconds_median"], result["cpu_seconds_median"]
    if not any(k.startswith("pi-vad/") for k in med):
        return []
    head = "π-VAD (default Config(), eval: student_only()) vs pivad's UR-DMU, same run"
    if "pi-vad/train_step_128x200" in med:
        head += (f"; the train step is π-VAD step 2 (L_second) and UR-DMU's L_MIL step, both at {PIVAD_TRAIN_PER_CLASS}+"
                 f"{PIVAD_TRAIN_PER_CLASS} crops x 200 (π-VAD at 64+64 does not fit in 23 GB RAM)")
    lines = [head + ":",
             "| case | UR-DMU (s) | π-VAD (s) | UR-DMU snippets/s | π-VAD snippets/s | π-VAD/UR-DMU wall | π-VAD/UR-DMU CPU "
             "| π-VAD % of fp32 peak |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        pv, c_pv = med.get(f"pi-vad/{c}"), cpu.get(f"pi-vad/{c}")
        if pv is None:
            continue
        ref_case = PIVAD_TRAIN_CASE if c.startswith("train") else c
        ur, c_ur = med.get(f"pivad/{ref_case}"), cpu.get(f"pivad/{ref_case}")
        n = SNIPPETS[ref_case]
        pv_frac = result["fraction_of_peak"].get(f"pi-vad/{c}")
        lines.append(f"| {ref_case} | {_fmt(ur)} | {_fmt(pv)} | {n / ur:,.0f} | {n / pv:,.0f} | {pv / ur:.2f}x "
                     f"| {c_pv / c_ur:.2f}x | {'-' if pv_frac is None else f'{100 * pv_frac:.0f}%'} |")
    lines.append("")
    return lines


def _fmt(s: float | None) -> str:
    return "-" if s is None else f"{s:.4f}"


if __name__ == "__main__":
    sys.exit(main())
