"""The conda environment file lists the same packages, with the same lower bounds, as pyproject
(the runtime, every extra and the test tools)."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT

# pip requirement (with extras) -> the conda-forge packages that provide it
EXTRAS = {
    "moto[s3]": ["moto"],
    "moto[server]": ["moto"],
    "opencv-python-headless": ["opencv"],
}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*(.*)$", requirement.strip())
    assert match, requirement
    return match.group(1).lower(), match.group(2).replace(" ", "")


def _pyproject_packages() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    packages: dict[str, str] = {}
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith(project["name"])]  # not self-refs
    for requirement in requirements:
        name, spec = _split(requirement)
        for conda_name in EXTRAS.get(name, [name]):
            packages.setdefault(conda_name, spec if conda_name == name.split("[")[0] else "")
        if "[" in name:
            packages[name.split("[")[0]] = spec
    return packages


def _conda_packages() -> tuple[dict[str, str], list]:
    env = yaml.safe_load((ROOT / "echo_s3_env.yml").read_text())
    assert env["name"] == "echo_s3_env"
    assert env["channels"] == ["conda-forge"]
    packages, pip_section = {}, []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip_section = entry["pip"]
            continue
        name, spec = _split(entry)
        packages[name] = spec
    return packages, pip_section


def test_conda_env_matches_pyproject():
    conda, pip_section = _conda_packages()
    assert conda.pop("python") == ">=3.10"
    conda.pop("pip")
    expected = _pyproject_packages()
    assert set(conda) == set(expected)
    for name, spec in expected.items():
        if spec:
            assert conda[name] == spec, f"{name}: conda {conda[name]!r} vs pyproject {spec!r}"
    assert pip_section[-1] == "-e ."
