"""Profiles: overlays of params.yaml that hold only what differs (profiles/paper.yaml is the original's scale).

`python -m rlinterp.profiles profiles/paper.yaml` writes the overlay's values into params.yaml in place,
keeping every comment, and validates the result; `dvc repro` then runs that profile. A profile key that
params.yaml does not have is refused, so a profile cannot drift from the defaults unnoticed.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from rlinterp.config import ConfigError, Params, params_from_dict, read_params_file


def overlay(base: dict[str, Any], profile: dict[str, Any], name: str = "profile") -> dict[str, Any]:
    """`base` with each section's keys replaced by the profile's; a section or key `base` lacks is refused."""
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in profile.items():
        if section not in base or not isinstance(values, dict):
            raise ConfigError(f"{name}: section {section!r} is not a section of params.yaml "
                              f"(expected one of {', '.join(base)})")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{name}: {section}.{key} is not a key of params.yaml")
            merged[section][key] = value
    return merged


def load_profile(params_path: str | Path, profile_path: str | Path) -> Params:
    """The validated params of `params_path` with the profile at `profile_path` laid over them."""
    return params_from_dict(overlay(read_params_file(params_path), read_params_file(profile_path), str(profile_path)))


ENTRY = re.compile(r"^(  (\w+):\s*)([^#\n]*?)(\s*#.*)?$")


def _entries(lines: list[str]):
    """(line index, section, key, match) of every `  key: value  # comment` line of a two-level YAML file."""
    section = None
    for i, line in enumerate(lines):
        header = re.match(r"^(\w+):", line)
        if header:
            section = header.group(1)
        elif (entry := ENTRY.match(line.rstrip("\n"))) and section:
            yield i, section, entry.group(2), entry


def apply(params_path: str | Path, profile_path: str | Path) -> None:
    """Write the profile's values, with the profile's comments where it has them, into the params file line
    by line, so that every other line and comment stays."""
    params_path = Path(params_path)
    profile = read_params_file(profile_path)
    load_profile(params_path, profile_path)                # refuse a bad profile before touching anything
    comments = {(section, key): entry.group(4) for _, section, key, entry in
                _entries(Path(profile_path).read_text().splitlines())}
    lines = params_path.read_text().splitlines(keepends=True)
    for i, section, key, entry in list(_entries(lines)):
        if key in profile.get(section, {}):
            value = yaml.safe_dump(profile[section][key], default_flow_style=True, width=1000)
            value = value.strip().removesuffix("...").strip()
            comment = comments.get((section, key)) or entry.group(4) or ""
            lines[i] = f"{entry.group(1)}{value}{comment}\n"
    params_path.write_text("".join(lines))
    applied = params_from_dict(read_params_file(params_path))
    expected = load_profile(params_path, profile_path)
    if applied != expected:
        raise ConfigError(f"{profile_path}: some values could not be written into {params_path} line by line "
                          "(block-style values are not supported)")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python -m rlinterp.profiles PROFILE [PARAMS (default params.yaml)]")
    apply(sys.argv[2] if len(sys.argv) == 3 else "params.yaml", sys.argv[1])
    print(f"applied {sys.argv[1]} to {sys.argv[2] if len(sys.argv) == 3 else 'params.yaml'}")
