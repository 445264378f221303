"""cluster/k8s/: KubeRay resources against the CRD schemas (shared/kuberay, or the gzipped copy
in tests/deploy/kuberay), the Kubernetes ones against Kubernetes' OpenAPI schemas
(kubernetes-validate, offline), and both against the security defaults. Every check is shown
rejecting a broken copy.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("jsonschema")
pytest.importorskip("kubernetes_validate")

from deploy_checks import (
    CLUSTER,
    VENDORED_KUBERAY,
    crd_problems,
    crd_text,
    kuberay_policy_problems,
    kubernetes_policy_problems,
    kubernetes_problems,
    load_yaml_documents,
)

K8S = CLUSTER / "k8s"
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml"))


def _resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in MANIFESTS:
        for resource in load_yaml_documents(K8S / name):
            found.append((name, resource))
            if resource.get("kind") == "ConfigMap":  # a RayJob template the CronJob creates
                for key, text in (resource.get("data") or {}).items():
                    found.append((f"{name}:{key}", yaml.safe_load(text)))
    return found


def _kuberay(kind: str) -> dict[str, Any]:
    """A deep copy of the one shipped `kind` (not the RayJob inside the ConfigMap)."""
    [resource] = [r for name, r in _resources() if r.get("kind") == kind and ":" not in name]
    return copy.deepcopy(resource)


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob", "RayCronJob"])
def test_the_gzipped_crds_are_the_shipped_ones(kind: str, kuberay_crds: Path) -> None:
    """tests/deploy/kuberay holds KubeRay's files unchanged (checked where shared/ exists)."""
    if kuberay_crds == VENDORED_KUBERAY:
        pytest.skip("no shared/kuberay here to compare the gzipped copies with")
    assert crd_text(VENDORED_KUBERAY, kind) == crd_text(kuberay_crds, kind)


def test_the_expected_manifests_are_shipped() -> None:
    kinds = sorted({(name.split(":")[0], r["kind"]) for name, r in _resources()})
    assert kinds == [
        ("networkpolicy.yaml", "NetworkPolicy"),
        ("nightly-cronjob.yaml", "ConfigMap"), ("nightly-cronjob.yaml", "CronJob"),
        ("nightly-cronjob.yaml", "RayJob"), ("nightly-cronjob.yaml", "Role"),
        ("nightly-cronjob.yaml", "RoleBinding"), ("nightly-cronjob.yaml", "ServiceAccount"),
        ("raycluster.yaml", "RayCluster"), ("raycronjob.yaml", "RayCronJob"),
        ("rayjob.yaml", "RayJob"), ("storage.yaml", "PersistentVolumeClaim"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "resource"), _resources(), ids=[f"{n}-{r['kind']}" for n, r in _resources()]
)
def test_shipped_resource_is_valid_and_secure(
    name: str, resource: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    if resource["apiVersion"] == "ray.io/v1":
        kuberay_crds = request.getfixturevalue("kuberay_crds")
        assert crd_problems(kuberay_crds, resource) == []
        assert kuberay_policy_problems(resource) == []
    else:
        assert kubernetes_problems(resource) == []
        assert kubernetes_policy_problems(resource) == []


def _head(resource: dict[str, Any]) -> Any:
    """The headGroupSpec of a RayCluster, RayJob or RayCronJob (itself, to mutate in place)."""
    spec = resource["spec"]
    spec = spec.get("jobTemplate", spec)
    return spec.get("rayClusterSpec", spec)["headGroupSpec"]


def _head_container(resource: dict[str, Any]) -> Any:
    return _head(resource)["template"]["spec"]["containers"][0]


Mutation = Callable[[dict[str, Any]], None]

CRD_BREAKS: dict[str, tuple[str, Mutation, str]] = {
    "rayStartParams value not a string": (
        "RayCluster", lambda r: _head(r)["rayStartParams"].update({"num-cpus": 0}),
        "is not of type 'string'"),
    "no headGroupSpec": (
        "RayCluster", lambda r: r["spec"].pop("headGroupSpec"), "'headGroupSpec' is a required"),
    "auth mode misspelt": (
        "RayCluster", lambda r: r["spec"].update(authOptions={"mode": "Token"}), "is not one of"),
    "a misspelt field": (
        "RayJob", lambda r: r["spec"].update(shutdownAfterJobFinish=True), "Additional properties"),
    "replicas a string": (
        "RayJob", lambda r: r["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="1"),
        "is not of type 'integer'"),
    "an image that is not a string": (
        "RayJob", lambda r: _head_container(r).update(image=["a"]), "is not of type 'string'"),
    "no schedule": ("RayCronJob", lambda r: r["spec"].pop("schedule"), "'schedule' is a required"),
    "empty timeZone": ("RayCronJob", lambda r: r["spec"].update(timeZone=""), "non-empty"),
    "v1alpha1": (
        "RayJob", lambda r: r.update(apiVersion="ray.io/v1alpha1"), "apiVersion must be ray.io/v1"),
}  # fmt: skip


@pytest.mark.parametrize("case", CRD_BREAKS)
def test_a_broken_copy_fails_the_crd_schema(case: str, kuberay_crds: Path) -> None:
    kind, mutate, expected = CRD_BREAKS[case]
    resource = _kuberay(kind)
    mutate(resource)
    problems = crd_problems(kuberay_crds, resource)
    assert any(expected in p for p in problems), problems


def _no_auth(resource: dict[str, Any]) -> None:
    spec = resource["spec"]
    spec = spec.get("jobTemplate", spec)
    spec.get("rayClusterSpec", spec)["authOptions"] = {"mode": "disabled"}


POLICY_BREAKS: dict[str, tuple[str, Mutation, str]] = {
    "token auth off (RayCluster)": ("RayCluster", _no_auth, "authOptions.mode is not token"),
    "token auth off (RayJob)": ("RayJob", _no_auth, "authOptions.mode is not token"),
    "token auth off (RayCronJob)": ("RayCronJob", _no_auth, "authOptions.mode is not token"),
    "dashboard on 0.0.0.0": (
        "RayCluster", lambda r: _head(r)["rayStartParams"].update({"dashboard-host": "0.0.0.0"}),
        "dashboard-host"),
    "dashboard host left to KubeRay": (
        "RayCluster", lambda r: _head(r)["rayStartParams"].pop("dashboard-host"),
        "not 127.0.0.1"),
    "a password in env": (
        "RayJob", lambda r: _head_container(r).setdefault("env", []).append(
            {"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"}), "literal secret"),
    "no credentials secret": (
        "RayCronJob", lambda r: _head_container(r).pop("envFrom"), "no MLflow credentials"),
    "root pods": (
        "RayCluster", lambda r: _head(r)["template"]["spec"].pop("securityContext"),
        "runAsNonRoot"),
    "latest image": (
        "RayJob", lambda r: _head_container(r).update(image="REGISTRY/ssvae:latest"),
        "no pinned tag"),
    "cluster kept after the job": (
        "RayJob", lambda r: r["spec"].update(shutdownAfterJobFinishes=False),
        "shutdownAfterJobFinishes is not true"),
    "capabilities kept": (
        "RayCluster", lambda r: _head_container(r)["securityContext"].pop("capabilities"),
        "capabilities are not all dropped"),
    "the autoscaler's container left as KubeRay makes it": (
        "RayCluster", lambda r: r["spec"].pop("autoscalerOptions"),
        "autoscalerOptions: allowPrivilegeEscalation is not false"),
    "KubeRay's default submitter pod (RayJob)": (
        "RayJob", lambda r: r["spec"].pop("submitterPodTemplate"), "no submitterPodTemplate"),
    "KubeRay's default submitter pod (RayCronJob)": (
        "RayCronJob", lambda r: r["spec"]["jobTemplate"].pop("submitterPodTemplate"),
        "no submitterPodTemplate"),
    "a submitter that may escalate": (
        "RayJob", lambda r: r["spec"]["submitterPodTemplate"]["spec"]["containers"][0].pop(
            "securityContext"), "submitterPodTemplate.ray-job-submitter: allowPrivilegeEscalation"),
    "nights that may overlap": (
        "RayCronJob", lambda r: r["spec"]["jobTemplate"].update(activeDeadlineSeconds=90000),
        "may outlive the day"),
}  # fmt: skip


@pytest.mark.parametrize("case", POLICY_BREAKS)
def test_an_insecure_copy_fails_the_policy(case: str, kuberay_crds: Path) -> None:
    kind, mutate, expected = POLICY_BREAKS[case]
    resource = _kuberay(kind)
    mutate(resource)
    assert crd_problems(kuberay_crds, resource) == []  # still a valid resource...
    problems = kuberay_policy_problems(resource)
    assert any(expected in p for p in problems), problems  # ...but not a safe one


def _builtin(kind: str) -> dict[str, Any]:
    [resource] = [r for _, r in _resources() if r.get("kind") == kind]
    return copy.deepcopy(resource)


def _cronjob_pod(resource: dict[str, Any]) -> Any:
    return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]


KUBERNETES_BREAKS: dict[str, tuple[str, Mutation, str]] = {
    "schedule missing": (
        "CronJob", lambda r: r["spec"].pop("schedule"), "'schedule' is a required"),
    "concurrencyPolicy of the wrong type": (
        "CronJob", lambda r: r["spec"].update(concurrencyPolicy=1), "is not of type 'string'"),
    "a misspelt field": (
        "CronJob", lambda r: _cronjob_pod(r).update(serviceAcountName="x"),
        "Additional properties"),
    "RoleBinding without roleRef": (
        "RoleBinding", lambda r: r.pop("roleRef"), "'roleRef' is a required"),
    "PVC access mode a string": (
        "PersistentVolumeClaim", lambda r: r["spec"].update(accessModes="ReadWriteMany"),
        "is not of type 'array'"),
}  # fmt: skip


@pytest.mark.parametrize("case", KUBERNETES_BREAKS)
def test_a_broken_copy_fails_kubernetes_validation(case: str) -> None:
    kind, mutate, expected = KUBERNETES_BREAKS[case]
    resource = _builtin(kind)
    mutate(resource)
    problems = kubernetes_problems(resource)
    assert any(expected in p for p in problems), problems


KUBERNETES_POLICY_BREAKS: dict[str, tuple[str, Mutation, str]] = {
    "overlapping nights": (
        "CronJob", lambda r: r["spec"].update(concurrencyPolicy="Allow"), "not Forbid"),
    "kubectl image unpinned": (
        "CronJob", lambda r: _cronjob_pod(r)["containers"][0].update(
            image="registry.k8s.io/kubectl"), "no pinned tag"),
    "a wildcard Role": ("Role", lambda r: r["rules"][0].update(verbs=["*"]), "wildcard"),
    "Ray pods open to every source": (
        "NetworkPolicy", lambda r: r["spec"]["ingress"][0].pop("from"), "admits every source"),
    "Ray pods open to every namespace": (
        "NetworkPolicy", lambda r: r["spec"]["ingress"][0]["from"].append(
            {"namespaceSelector": {}}), "admits every namespace"),
    "Ray pods open to addresses": (
        "NetworkPolicy", lambda r: r["spec"]["ingress"][0]["from"].append(
            {"ipBlock": {"cidr": "0.0.0.0/0"}}), "ipBlock"),
    "a policy for some other pods": (
        "NetworkPolicy", lambda r: r["spec"].update(podSelector={}), "not every Ray pod"),
}  # fmt: skip


@pytest.mark.parametrize("case", KUBERNETES_POLICY_BREAKS)
def test_an_unsafe_kubernetes_copy_fails_the_policy(case: str) -> None:
    kind, mutate, expected = KUBERNETES_POLICY_BREAKS[case]
    resource = _builtin(kind)
    mutate(resource)
    assert kubernetes_problems(resource) == []
    problems = kubernetes_policy_problems(resource)
    assert any(expected in p for p in problems), problems


def test_the_cronjobs_rayjob_is_the_raycronjobs_template() -> None:
    """The two nightly schedules run the same RayJob (one file must not drift from the other)."""
    from_cronjob = _builtin("ConfigMap")["data"]["rayjob.yaml"]
    assert yaml.safe_load(from_cronjob)["spec"] == _kuberay("RayCronJob")["spec"]["jobTemplate"]


def test_every_ray_cluster_runs_the_same_images_and_ray() -> None:
    specs = [_kuberay("RayCluster")["spec"], _kuberay("RayJob")["spec"]["rayClusterSpec"],
             _kuberay("RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"]]  # fmt: skip
    images = {
        (s["rayVersion"], s["headGroupSpec"]["template"]["spec"]["containers"][0]["image"],
         s["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"]) for s in specs
    }  # fmt: skip
    assert images == {("2.60.0", "REGISTRY/ssvae:0.1.0-cpu", "REGISTRY/ssvae:0.1.0-cuda")}


def test_the_jobs_run_files_that_exist_in_the_image() -> None:
    """The entrypoints name sweeps/run.py and a sweep file the image copies from this checkout."""
    for kind in ("RayJob", "RayCronJob"):
        spec = _kuberay(kind)["spec"]
        entrypoint = spec.get("jobTemplate", spec)["entrypoint"]
        words = entrypoint.split()
        assert words[:2] == ["python", "/opt/ssvae/sweeps/run.py"], entrypoint
        sweep_file = next(w for w in words if w.startswith("sweeps/"))
        assert (CLUSTER.parent / sweep_file).is_file(), sweep_file
    nightly = _kuberay("RayCronJob")["spec"]["jobTemplate"]["entrypoint"]
    assert "nightly sweeps/nightly.yaml" in nightly
    # `ssvae nightly` names each night to the second; a --name stamped by the minute or the day
    # would refuse a second night (a catch-up after operator downtime) as a name already taken
    assert "--name" not in nightly, nightly


def test_no_header_command_quotes_a_variable_for_the_head() -> None:
    """`ray job submit -- ...` quotes every word again (shlex.join), so a '$VAR' the user's
    shell leaves alone reaches the head's shell quoted too, and is never expanded."""
    lines = [
        line for name in MANIFESTS for line in (K8S / name).read_text().splitlines()
        if line.startswith("#") and "ray job submit" in line
    ]  # fmt: skip
    assert lines, "the headers show how to submit a sweep"
    assert [line for line in lines if "'$" in line] == []


def test_the_cronjob_script_parses_and_waits_for_the_rayjob() -> None:
    script = _cronjob_pod(_builtin("CronJob"))["containers"][0]["args"][0]
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    broken = script.replace("esac", "")
    assert subprocess.run(["bash", "-n"], input=broken, text=True, capture_output=True).returncode
    assert "kubectl create -f /etc/ssvae/rayjob.yaml" in script
    assert "jobDeploymentStatus" in script and '[ "$status" = SUCCEEDED ]' in script
