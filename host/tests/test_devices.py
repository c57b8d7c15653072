"""What decides GPU numbers is in the key; where cells run on which GPU; the one-line errors.

No GPU here: CUDA is faked at the functions the runner asks (device name, cuDNN version, device
count), which is all planning touches. The kernel settings are real torch flags, restored
after each test.
"""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

import ttabench.runner.benchmark as benchmark
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.runner.device_facts import check_same_facts, configure_device, device_facts
from ttabench.runner.pool import worker_gpus
from ttabench.runner.ray_executor import RayBackend, task_device
from ttabench.runner.views import describe_error
from ttabench.runner.worker import on_own_gpu


@pytest.fixture()
def fake_cuda(monkeypatch):
    """CUDA devices named 'Fake GPU' as far as planning asks (the device is taken as given,
    the GPU's name and cuDNN's version are faked); torch's kernel settings restored after."""
    monkeypatch.setattr(benchmark, "resolve_device", torch.device)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    set_devices: list = []
    monkeypatch.setattr(torch.cuda, "set_device", set_devices.append)
    cudnn = {flag: getattr(torch.backends.cudnn, flag)
             for flag in ("deterministic", "benchmark", "allow_tf32")}
    matmul = torch.backends.cuda.matmul.allow_tf32
    algorithms = torch.are_deterministic_algorithms_enabled()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield set_devices
    for flag, value in cudnn.items():
        setattr(torch.backends.cudnn, flag, value)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.use_deterministic_algorithms(algorithms)
    if workspace is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def planned(device: str = "cpu", **kw) -> dict:
    spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=["source"], estimators=["ac"],
                   device=device, splits=["noise-1"], threads=1, **kw)
    plan = Benchmark(spec).plan()[0]
    return {"protocol": plan.protocol, "key": plan.key, "spec": spec}


def test_a_cpu_cell_records_no_device_facts():
    assert device_facts(torch.device("cpu")) == {}
    assert "cuda" not in planned()["protocol"]


def test_a_cuda_cell_records_gpu_cudnn_tf32_and_determinism_in_its_key(fake_cuda):
    default = planned("cuda")
    facts = default["protocol"]["cuda"]
    assert facts["gpu"] == "Fake GPU" and facts["cudnn"] == 90100
    assert facts["cuda"] == torch.version.cuda
    assert facts["tf32"] == {"conv": torch.backends.cudnn.allow_tf32,
                             "matmul": torch.backends.cuda.matmul.allow_tf32}
    assert facts["cudnn_benchmark"] is True and facts["deterministic"] == {
        "cudnn": False, "algorithms": False}
    strict = planned("cuda", deterministic=True)
    assert strict["protocol"]["cuda"]["deterministic"] == {"cudnn": True, "algorithms": True}
    assert strict["protocol"]["cuda"]["cudnn_benchmark"] is False
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert strict["key"] != default["key"]
    torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    assert planned("cuda")["key"] != default["key"]  # TF32 for matrix products changes it


def test_cuda_n_becomes_the_current_device(fake_cuda):
    configure_device(torch.device("cuda:1"), deterministic=False)
    assert fake_cuda == [torch.device("cuda:1")]
    configure_device(torch.device("cuda:1"), deterministic=False, runs_cells=False)
    assert len(fake_cuda) == 1  # a process that only plans touches no GPU


def test_a_worker_on_another_gpu_model_refuses_the_plan(fake_cuda):
    spec = planned("cuda")["spec"]
    assert spec.device_facts["gpu"] == "Fake GPU"
    spec.device_facts = {**spec.device_facts, "gpu": "Other GPU"}
    with pytest.raises(TTABenchError, match="'Other GPU' \\(planned\\) vs 'Fake GPU' \\(here\\)"):
        Benchmark(spec)
    check_same_facts({"gpu": None, "cudnn": 90100}, {"gpu": "Fake GPU", "cudnn": 90100})


def test_jobs_take_the_gpus_round_robin():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert worker_gpus(cpu, ["0", "1"]) == []
    assert worker_gpus(cuda, ["0", "1", "2"]) == ["0", "1", "2"]
    assert worker_gpus(torch.device("cuda:1"), ["4", "6"]) == ["6"]  # names among the visible
    with pytest.raises(TTABenchError, match="different models"):
        worker_gpus(cuda, ["0", "1"], ["A100", "H100"])
    assert worker_gpus(torch.device("cuda:0"), ["0", "1"], ["A100", "H100"]) == ["0"]
    assert on_own_gpu({"device": "cuda:1"}, True)["device"] == "cuda:0"
    assert on_own_gpu({"device": "cuda:1"}, False)["device"] == "cuda:1"
    assert on_own_gpu({"device": "cpu"}, True)["device"] == "cpu"


def test_ray_tasks_get_their_gpus_from_ray_remote():
    class FakeRay:
        def remote(self, **resources):
            self.resources = resources
            return lambda fn: ("task", fn)

    backend = RayBackend.__new__(RayBackend)
    backend.ray, backend.options = FakeRay(), {"num_gpus": 0.5, "num_cpus": 2}
    assert backend.remote(len) == ("task", len)
    assert backend.ray.resources == {"num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 0,
                                     "retry_exceptions": False}


def test_the_ray_device_follows_num_gpus_and_refuses_cuda_without_gpus():
    assert task_device(None, {"num_gpus": 1}) == "cuda"
    assert task_device(None, {}) == "cpu"
    assert task_device("cuda:1", {"num_gpus": 1}) == "cuda:1"
    with pytest.raises(TTABenchError, match="num_gpus"):
        task_device("cuda", {"num_gpus": 0})


def test_a_ray_head_without_cuda_plans_cuda_cells(config):
    """This machine has no CUDA: it plans the cells of a GPU Ray run (dry run), and refuses
    --device cuda when the tasks would get no GPU."""
    args = ["run", "--config", str(config), "-s", "tiny", "-m", "tiny-cnn", "-e", "ac",
            "--splits", "noise-1", "--executor", "ray", "--device", "cuda", "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "executor.ray.num_gpus" in result.output
    result = CliRunner().invoke(main, [*args, "--set", "executor.ray.num_gpus=1"])
    assert result.exit_code == 0, result.output
    assert "device cuda (GPU chosen per task" in result.output


def test_out_of_memory_names_the_options_that_fix_it():
    line = describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate "
                                                      "2.00 GiB"))
    assert "--batch-size" in line and "--jobs" in line and "out of memory" in line


def test_validate_checks_adapters_on_the_device_it_is_given():
    from ttabench.adapters import SourceAdapter
    from ttabench.testing import run_all

    seen: list[torch.device] = []

    class WhereAmI(SourceAdapter):
        name = "where-am-i"

        def forward(self, x):
            seen.append(x.device)
            assert next(self.model.parameters()).device == x.device
            return super().forward(x)

    results = run_all("adapters", WhereAmI, device=torch.device("cpu"))
    assert all(ok for _, ok, _ in results) and seen and set(seen) == {torch.device("cpu")}
    ok = CliRunner().invoke(main, ["validate", "adapters:source", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(main, ["validate", "adapters:source", "--device", "cuda:7"])
    assert refused.exit_code == 2 and refused.stderr.strip().startswith("error: --device cuda:7")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_out_of_memory_in_a_pass_is_not_reported_as_an_input_size():
    from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
    from ttabench.runner.passes import split_passes

    class Hungry(torch.nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    data = torch.utils.data.TensorDataset(torch.zeros(8, 3, 4, 4, dtype=torch.uint8),
                                          torch.zeros(8, dtype=torch.long))
    reader = StreamReader(data, DecodedCache(8, 0), LoaderOptions())
    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        split_passes(Hungry(), reader, torch.arange(8), 4, torch.device("cpu"))
    assert "--batch-size" in describe_error(caught.value)


def test_deterministic_is_a_run_option_of_the_command_line_and_the_config(tmp_path):
    from ttabench.runner.config import build_spec, load_config

    empty, strict = tmp_path / "empty.toml", tmp_path / "strict.toml"
    empty.write_text("")
    strict.write_text("[run]\ndeterministic = true\n")
    assert build_spec(load_config(empty), estimator=["ac"]).deterministic is False
    assert build_spec(load_config(empty), estimator=["ac"], deterministic=True).deterministic
    assert build_spec(load_config(strict), estimator=["ac"]).deterministic
    assert build_spec(load_config(empty, overrides=["run.deterministic=true"]),
                      estimator=["ac"]).deterministic
