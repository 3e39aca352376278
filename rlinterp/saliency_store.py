"""data/saliency.zarr, written by the saliency stage and read by the panel: SmoothGrad maps by mode, target and
kind, and how far back in time each target's frame saliency reaches.

Layout: one float32 array per `{mode}/{target}/{kind}`, shaped (sample, timestep, step, ...): `mode` is one of
MODES (gradients through the simulated environment or only through the agent's memory), `kind` one of KINDS
(the decoded frame (3, S, S), the agent hx, the simulator's deterministic state, each per step, and the latent,
without a step axis). Attributes name the samples, the explained timesteps, the targets and combine mode. This
module is torch-free, so views read maps without loading models.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from rlinterp.errors import InputError
from rlinterp.intervals import mean_interval, percentile_interval

MODES = ("with_env_grads", "without_env_grads")
KINDS = ("frames", "agent_hx", "env_h", "latent")
DIFFERENCE_RESAMPLES = 2000   # bootstrap resamples of the ICs' lookback against random directions


def mode_name(env_grads: bool) -> str:
    return MODES[0] if env_grads else MODES[1]


@dataclass
class SaliencyStore:
    samples: list           # the sample ids explained (combine mode: one list, the samples averaged into one latent)
    timesteps: list[int]    # the steps whose targets were explained
    targets: list[str]      # target names (value, action, action_<name>, ic_<k>, random_direction_<k>)
    combine: bool
    maps: dict[str, np.ndarray] | zarr.Group   # `{mode}/{target}/{kind}` -> (sample, timestep, step, ...)

    def get(self, mode: str, target: str, kind: str) -> np.ndarray:
        return np.asarray(self.maps[f"{mode}/{target}/{kind}"])

    def first(self, count: int) -> SaliencyStore:
        """The same maps of the first `count` samples only (combine mode has one)."""
        return SaliencyStore(self.samples if self.combine else self.samples[:count], self.timesteps, self.targets,
                             self.combine, {key: np.asarray(self.maps[key])[:count] for key in self.keys()})

    def save(self, path: str | Path) -> None:
        """Write into `path` (a directory the caller makes atomic, e.g. with files.atomic_directory)."""
        root = zarr.open_group(str(path), mode="w")
        root.attrs.update({"samples": self.samples, "timesteps": self.timesteps, "targets": self.targets,
                           "combine": self.combine})
        for key in self.keys():
            root.create_array(key, data=np.asarray(self.maps[key], dtype=np.float32))

    def keys(self) -> list[str]:
        return [f"{mode}/{target}/{kind}" for mode in MODES for target in self.targets for kind in KINDS]

    @classmethod
    def load(cls, path: str | Path) -> SaliencyStore:
        """Open lazily; a missing store, attribute or array is an InputError naming it."""
        try:
            root = zarr.open_group(str(path), mode="r")
            attrs = {key: root.attrs[key] for key in ("samples", "timesteps", "targets", "combine")}
        except (FileNotFoundError, KeyError) as err:
            raise InputError(f"{path}: not a complete saliency store ({err!r}); expected the saliency stage's "
                             f"output with attributes samples, timesteps, targets, combine") from err
        store = cls(list(attrs["samples"]), [int(t) for t in attrs["timesteps"]], list(attrs["targets"]),
                    bool(attrs["combine"]), root)
        missing = [key for key in store.keys() if key not in root]
        if missing:
            raise InputError(f"{path}: arrays {missing[:3]}{' ...' if len(missing) > 3 else ''} missing; expected "
                             f"one per mode, target and kind")
        return store

    def frame_saliency_by_step(self, mode: str, target: str) -> np.ndarray:
        """(sample, timestep, step): summed |frame saliency| of each step."""
        return np.abs(self.get(mode, target, "frames")).sum(axis=(3, 4, 5))

    def share_before_t(self, mode: str, target: str) -> np.ndarray:
        """Per sample: the share of its frame saliency, summed over the explained steps t (each up to t), that lies
        on frames before t: how much of a target's explanation is in the past rather than the present frame."""
        by_step = self.frame_saliency_by_step(mode, target)
        earlier = sum(by_step[:, i, :t].sum(1) for i, t in enumerate(self.timesteps))
        total = sum(by_step[:, i, :t + 1].sum(1) for i, t in enumerate(self.timesteps))
        return earlier / np.maximum(total, 1e-12)

    def lookback_curves(self, targets: tuple[str, ...]) -> dict[str, np.ndarray]:
        """"target (mode)" -> mean |frame saliency| of each step up to the first explained timestep t (t + 1,)."""
        t = self.timesteps[0]
        return {f"{target} ({mode.replace('_', ' ')})": self.frame_saliency_by_step(mode, target)[:, 0, :t + 1].mean(0)
                for mode in MODES for target in targets if target in self.targets}

    def lookback_report(self) -> dict[str, dict]:
        """Per mode: each target's share of frame saliency before t (mean over samples, 95% t-interval), and the
        ICs' mean share against the random hx directions' (paired by sample, resampled over samples and directions:
        `two_way_difference`)."""
        report: dict[str, dict] = {}
        for mode in MODES:
            shares = {target: self.share_before_t(mode, target) for target in self.targets}
            report[mode] = {target: interval(share) for target, share in shares.items()}
            ics = [share for target, share in shares.items() if target.startswith("ic_")]
            randoms = [share for target, share in shares.items() if target.startswith("random_direction")]
            if ics and randoms:
                report[mode]["ic_minus_random_direction"] = two_way_difference(np.array(ics), np.array(randoms))
        return report


def two_way_difference(ics: np.ndarray, randoms: np.ndarray, resamples: int = DIFFERENCE_RESAMPLES,
                       seed: int = 0) -> dict[str, float]:
    """The ICs' mean share (ics (C, S), per IC and sample) minus the random directions' (randoms (D, S)), with a 95%
    bootstrap interval that resamples the samples and, independently, the random directions: another draw of
    directions would move the null's mean too, which an interval over samples alone leaves out."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(ics.shape[1], size=(resamples, ics.shape[1]))
    directions = rng.integers(len(randoms), size=(resamples, len(randoms)))
    ic_means, random_means = ics.mean(0), randoms.mean(0)             # (S,) each sample's mean over ICs
    per_direction = randoms[directions]                                 # (R, D, S)
    resampled = np.array([ic_means[s].mean() - per_direction[r][:, s].mean() for r, s in enumerate(samples)])
    return {**percentile_interval(float(ic_means.mean() - random_means.mean()), resampled),
            "samples": ics.shape[1], "directions": len(randoms)}


def interval(values: np.ndarray) -> dict[str, float]:
    """Mean over samples with its 95% t-interval, and how many samples."""
    return {**mean_interval(values), "samples": len(values)}
