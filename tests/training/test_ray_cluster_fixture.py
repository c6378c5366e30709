"""The shared Ray fixture starts a real cluster that runs tasks and answers the jobs API."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_cluster_runs_a_task_on_its_cpus(ray_cluster) -> None:
    import ray

    ray.init(address=ray_cluster.address, log_to_driver=False)
    try:

        @ray.remote
        def square(x: int) -> int:
            return x * x

        assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
        assert ray.cluster_resources()["CPU"] == ray_cluster.num_cpus
    finally:
        ray.shutdown()


def test_ray_cluster_answers_the_job_api(ray_cluster) -> None:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    assert isinstance(client.list_jobs(), list)
