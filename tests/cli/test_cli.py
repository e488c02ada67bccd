"""`qosgate render` and `qosgate explain` from the command line: output, and errors naming file/document/field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qosgate.cli.main import main

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      qosResources: [{name: memory-qos, class: gold}]
      containers:
      - name: app
        image: web
        resources:
          requests: {memory: 1Gi}
          limits: {memory: 2Gi}
          qosResources: [{name: memory-qos, class: silver}]
      - name: log
        image: fluent
        resources: {requests: {memory: 64Mi}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          qosResources: [{name: memory-qos, class: gold}]
          containers: [{name: job, image: batch, resources: {requests: {memory: 512Mi}}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(DEPLOYMENT)
    return path


def test_render_moves_native_fields_into_carrier_annotations(manifest, capsys):
    assert main(["render", str(manifest)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    template = docs[0]["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "qos-resources.qosgate.io": "memory-qos=gold",
        "qos-resources.qosgate.io/app": "memory-qos=silver",
    }
    assert "qosResources" not in template["spec"]
    assert "qosResources" not in template["spec"]["containers"][0]["resources"]
    assert template["metadata"]["labels"] == {"app": "web"}


def test_render_handles_cronjob_templates_and_passes_other_kinds_through(manifest, capsys):
    main(["render", str(manifest)])
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    job_template = docs[1]["spec"]["jobTemplate"]["spec"]["template"]
    assert job_template["metadata"]["annotations"]["qos-resources.qosgate.io"] == "memory-qos=gold"
    assert docs[2] == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}


def test_render_output_is_stable_when_rendered_again(manifest, tmp_path, capsys):
    main(["render", str(manifest)])
    once = capsys.readouterr().out
    again_path = tmp_path / "once.yaml"
    again_path.write_text(once)
    main(["render", str(again_path)])
    assert capsys.readouterr().out == once


def test_render_reads_standard_input():
    result = subprocess.run([sys.executable, "-m", "qosgate.cli.main", "render", "-"], input=DEPLOYMENT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "qos-resources.qosgate.io" in result.stdout


def test_render_error_names_file_document_object_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOYMENT.replace("class: silver", "class: -silver-"))
    assert main(["render", str(bad)]) == 1
    error = capsys.readouterr().err
    assert str(bad) in error
    assert "document 1 (Deployment team-a/web)" in error
    assert "spec.template.spec.containers[0].resources.qosResources[0].class" in error


def test_render_rejects_invalid_yaml_with_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nmetadata: {name: [\n")
    assert main(["render", str(bad)]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_render_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["render", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_explain_prints_memory_plan_per_container(manifest, capsys):
    assert main(["explain", str(manifest)]) == 0
    out = capsys.readouterr().out
    # app: silver 50 % of 1Gi; log inherits the pod default gold: 100 % of 64Mi
    assert "Deployment team-a/web (spec.template): pod memory.min 576Mi" in out
    assert "CronJob nightly (spec.jobTemplate.spec.template): pod memory.min 512Mi" in out
    assert "memory.min.memory-qos.nri.io/app" in out


def test_explain_json_output_has_figures(manifest, capsys):
    assert main(["explain", str(manifest), "-o", "json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    web = reports[0]
    containers = {c["name"]: c for c in web["containers"]}
    assert containers["app"]["classes"] == {"memory-qos": "silver"}
    assert containers["app"]["memoryMin"] == 2**29
    assert containers["log"]["classes"] == {"memory-qos": "gold"}
    assert containers["log"]["memoryMin"] == 64 * 2**20
    assert web["memoryMin"] == 2**29 + 64 * 2**20
    assert web["annotations"]["qosgate.io/memory-min"] == str(2**29 + 64 * 2**20)


def test_explain_unknown_class_names_allowed_classes(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOYMENT.replace("class: silver", "class: platinum"))
    assert main(["explain", str(bad)]) == 1
    error = capsys.readouterr().err
    assert "platinum" in error and "allowed: gold, silver, bronze" in error


@pytest.mark.parametrize("command", ["explain", "render"])
def test_a_manifest_that_is_not_utf8_is_a_one_line_error(command, tmp_path, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe kind: Pod")
    assert main([command, str(binary)]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"qosgate {command}: {binary}: not UTF-8 text (byte 0): manifests are YAML or JSON"


def test_a_catalog_file_that_is_not_utf8_is_a_one_line_error(manifest, tmp_path, capsys):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_bytes(b"protectablePercent: 90\n\xff")
    assert main(["explain", str(manifest), "--catalog", str(catalog)]) == 1
    assert capsys.readouterr().err.strip() == (f"qosgate explain: {catalog}: catalog is not UTF-8 text (byte 23): "
                                               "expected YAML")


def test_explain_with_invalid_catalog_file_names_the_field(manifest, tmp_path, capsys):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("resources: [{name: memory-qos, classes: [{name: gold, memoryMinPercent: 101}]}]\n")
    assert main(["explain", str(manifest), "--catalog", str(catalog)]) == 1
    assert "resources[0].classes[0].memoryMinPercent" in capsys.readouterr().err
