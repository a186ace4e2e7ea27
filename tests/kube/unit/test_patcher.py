"""The requestedAt patch: retried through conflicts and 5xx, coalesced in bursts."""

from __future__ import annotations

import asyncio

import pytest

from relay.kube.base import GITREPOSITORIES
from relay.kube.errors import Conflict, NotFound, ServerError
from relay.kube.fake import FakeCluster
from relay.kube.retry import Backoff
from tests.kube.standins import git_repository
from workers.reconcile.flux import REQUESTED_AT
from workers.reconcile.patcher import Patcher, Target

SOURCE = Target(GITREPOSITORIES, "flux-system", "flux-system")


@pytest.fixture
def fake() -> FakeCluster:
    cluster = FakeCluster()
    cluster.create(GITREPOSITORIES, git_repository("flux-system"))
    return cluster


def quick(fake: FakeCluster, window: float = 0.3) -> Patcher:
    return Patcher(fake, window=window, backoff=Backoff(initial=0.01, cap=0.02))


async def test_a_lone_request_is_patched_at_once_with_a_merge_patch(fake: FakeCluster) -> None:
    patcher = quick(fake)
    result = await patcher.request(SOURCE)
    [record] = fake.patches
    assert record.patch == {"metadata": {"annotations": {REQUESTED_AT: result.value}}}
    assert record.content_type == "application/merge-patch+json"
    assert result.object["metadata"]["annotations"][REQUESTED_AT] == result.value
    assert not result.coalesced
    await patcher.close()


async def test_a_burst_costs_two_patches_and_the_followers_share_one_result(
    fake: FakeCluster,
) -> None:
    patcher = quick(fake, window=0.3)
    fake.latency = 0.01
    first = asyncio.create_task(patcher.request(SOURCE))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(patcher.request(SOURCE)) for _ in range(19)]
    results = await asyncio.gather(first, *rest)
    assert len(fake.patches) == 2
    assert results[0].value != results[1].value
    assert {r.value for r in results[1:]} == {results[1].value}
    assert all(r.coalesced for r in results[1:])
    # The trailing patch waits for the window to close after the first one.
    assert fake.patches[1].at - fake.patches[0].at >= 0.29
    await patcher.close()


async def test_requests_further_apart_than_the_window_are_each_patched_at_once(
    fake: FakeCluster,
) -> None:
    patcher = quick(fake, window=0.05)
    await patcher.request(SOURCE)
    await asyncio.sleep(0.07)
    second = await patcher.request(SOURCE)
    assert len(fake.patches) == 2 and not second.coalesced
    await patcher.close()


async def test_conflicts_and_server_errors_are_retried(fake: FakeCluster) -> None:
    patcher = quick(fake)
    fake.fail_next("patch", Conflict("the object has been modified"), times=2)
    fake.fail_next("patch", ServerError("etcdserver: request timed out"), times=2)
    await patcher.request(SOURCE)
    assert fake.calls["patch"] == 5 and len(fake.patches) == 1
    await patcher.close()


async def test_persistent_server_errors_surface_after_the_attempts(fake: FakeCluster) -> None:
    patcher = quick(fake)
    fake.fail_next("patch", ServerError("boom"), times=10)
    with pytest.raises(ServerError):
        await patcher.request(SOURCE)
    assert fake.calls["patch"] == patcher.attempts
    await patcher.close()


async def test_not_found_is_not_retried_and_reaches_every_waiter(fake: FakeCluster) -> None:
    patcher = quick(fake)
    missing = Target(GITREPOSITORIES, "flux-system", "nope")
    results = await asyncio.gather(
        *(patcher.request(missing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, NotFound) for r in results)
    await patcher.close()


async def test_a_finished_patch_whose_callbacks_have_not_run_is_not_in_flight(
    fake: FakeCluster,
) -> None:
    """The trailing patch must not wait on a flag only a done-callback clears: it would spin
    without yielding (seen in the bench: a patch finishing as the window closed)."""
    from workers.reconcile.patcher import _State

    patcher = quick(fake, window=0.05)
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    state = _State(last_sent=0.0, inflight=done)  # type: ignore[arg-type]
    patcher._states[SOURCE] = state
    result = await asyncio.wait_for(patcher.request(SOURCE), 2)
    assert not result.coalesced and len(fake.patches) == 1
    await patcher.close()
