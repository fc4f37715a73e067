"""``kubectl rollout status`` for StatefulSets and DaemonSets, checked against what a real
kubectl said of each captured state: what rollbackd waits for after a revert of either kind."""

from __future__ import annotations

import copy

import pytest

from rollbackd.rollbacks.status import ON_DELETE, workload_status
from tests.kube_fixtures import load

STEPS = {  # kubectl's step name -> the state file it ran on
    "statefulset": {
        s: s
        for s in (
            "rev1",
            "annotated-v1",
            "rev2",
            "rev3",
            "after-undo1",
            "after-undo2",
            "after-undo-to-rev1",
            "after-precondition-patch",
        )
    },
    "statefulset-stuck": {
        "rev1": "rev1",
        "rev2": "rev2",
        "rev3 (stuck)": "stuck-at-rev3",
        "right after undo": "after-undo-0s",
        "300s after undo": "after-undo-300s",
        "after deleting the stuck pod": "after-deleting-stuck-pod",
    },
    "statefulset-ondelete": {
        "rev1": "rev1",
        "after set image (OnDelete)": "after-set-image-30s",
        "after undo (OnDelete)": "after-undo-30s",
    },
}
STEPS["daemonset"] = STEPS["statefulset"]
CASES = [
    (folder, outcome)
    for folder, steps in STEPS.items()
    for outcome in load(f"workloads/{folder}/rollout-status-outcomes.json")
    if outcome["step"] in steps
]


@pytest.mark.parametrize(("folder", "outcome"), CASES, ids=[f"{f}:{o['step']}" for f, o in CASES])
def test_every_captured_state_reads_as_kubectl_said(folder: str, outcome: dict[str, str]) -> None:
    """Done or not, and the very words kubectl printed last, for each captured step of a
    StatefulSet (RollingUpdate, stuck, OnDelete) and a DaemonSet."""
    kind = "DaemonSet" if folder == "daemonset" else "StatefulSet"
    base = "daemonset" if kind == "DaemonSet" else "statefulset"
    workload = load(f"workloads/{folder}/{base}-{STEPS[folder][outcome['step']]}.json")
    status = workload_status(workload, kind)
    if outcome["stderr"].startswith("error: rollout status is only available"):
        assert status.waits_for_deletion
        assert not status.done
        assert status.message == ON_DELETE
        return
    assert status.done == (outcome["exit_code"] == 0)
    assert status.message == outcome["stdout"].splitlines()[-1]
    assert not status.waits_for_deletion


def test_unobserved_specs_and_partitions_wait() -> None:
    """A spec the controller has not observed yet is never done, for either kind; a
    partitioned StatefulSet is done once the pods above the partition are updated."""
    sts = load("workloads/statefulset/statefulset-rev3.json")
    ds = load("workloads/daemonset/daemonset-rev3.json")
    for workload, kind in ((sts, "StatefulSet"), (ds, "DaemonSet")):
        newer = copy.deepcopy(workload)
        newer["metadata"]["generation"] += 1
        status = workload_status(newer, kind)
        assert not status.done
        assert "spec update to be observed" in status.message
    partitioned = copy.deepcopy(sts)
    partitioned["spec"]["updateStrategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 1},
    }
    partitioned["status"]["updatedReplicas"] = 0
    assert workload_status(partitioned, "StatefulSet").message == (
        "Waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated..."
    )
    partitioned["status"]["updatedReplicas"] = 1
    assert workload_status(partitioned, "StatefulSet").done
