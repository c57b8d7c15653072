"""Which GPU each worker process of a run sees, with the GPUs faked (no GPU here): a
``--jobs`` worker takes the run's GPUs in turn, a Ray task with ``num_gpus`` gets a fresh
process that sees only the GPU Ray gave it and runs the run's ``cuda:N`` as its ``cuda:0``."""

from __future__ import annotations

import pytest

from ttabench.runner.pool import PoolBackend
from ttabench.runner.ray_executor import RayBackend
from ttabench_test_plugins import ray_task_view, report_gpu


def test_each_pool_worker_sees_its_own_gpu_before_cuda_starts(spawned_workers_env):
    pool = PoolBackend(jobs=2, gpus=["3", "5"]).new_pool()
    try:
        seen = dict(future.result() for future in
                    [pool.submit(report_gpu, 1.0) for _ in range(4)])
    finally:
        pool.shutdown()
    assert sorted(seen.values()) == ["3", "5"]  # two workers, one GPU each


@pytest.mark.slow
def test_ray_gpu_tasks_each_get_a_fresh_process_on_their_gpu(spawned_workers_env):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        backend = RayBackend(options={"num_gpus": 1})
        task = backend.remote(ray_task_view)
        seen = ray.get([task.remote(0.2) for _ in range(3)])
    finally:
        ray.shutdown()
    pids = [pid for pid, _, _ in seen]
    assert len(set(pids)) == 3  # no worker process ran two GPU tasks
    assert {visible for _, visible, _ in seen} == {"0", "1"}
    assert {device for _, _, device in seen} == {"cuda:0"}
