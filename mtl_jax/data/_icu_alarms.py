"""Synthetic multichannel ICU alarm windows (true arrhythmias vs artefact false alarms).

A stand-in for the private ICU data of Schwab et al., "Not to Cry Wolf:
Distantly Supervised Multitask Learning in Critical Care", ICML 2018,
https://arxiv.org/abs/1802.05027, shaped like the public PhysioNet/CinC 2015
false-alarm challenge (the same five alarm types).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mtl_jax import _validate

__all__ = ["ALARM_TYPES", "ICU_STREAMS", "ICUAlarms", "icu_alarms"]

ALARM_TYPES: tuple[str, ...] = (
    "asystole",
    "bradycardia",
    "tachycardia",
    "ventricular_tachycardia",
    "ventricular_flutter_fib",
)
"""The five alarm types, in the order of :attr:`ICUAlarms.alarm_type`."""

ICU_STREAMS: tuple[str, ...] = ("ecg", "pulse", "respiration")
"""The streams of :func:`icu_alarms`, in the order of the stream axis."""


class ICUAlarms(NamedTuple):
    """Windows from :func:`icu_alarms` (all NumPy).

    Attributes:
      windows: ``[N, 3, T]`` float32, streams in :data:`ICU_STREAMS` order;
        missing samples are 0.
      missing: ``[N, 3]`` float32, 1 where the whole stream is absent.
      labels: ``[N]`` int32, 1 for a true alarm, 0 for a false alarm.
      alarm_type: ``[N]`` int32 index into :data:`ALARM_TYPES`.
    """

    windows: np.ndarray
    missing: np.ndarray
    labels: np.ndarray
    alarm_type: np.ndarray


def _beats(rng, t, fs, rate_bpm, irregular):
    """Beat times (seconds) over ``t`` seconds at ``rate_bpm`` with RR jitter."""
    rr = 60.0 / rate_bpm
    times, now = [], rng.uniform(0, rr)
    while now < t:
        times.append(now)
        now += rr * (1.0 + irregular * rng.normal())
        now = max(now, times[-1] + 0.15)
    return np.asarray(times)


def _ecg(rng, time, beats, width):
    """A spike train with P, QRS (width ``width`` s) and T waves at ``beats``."""
    x = np.zeros_like(time)
    for b in beats:
        x += 1.0 * np.exp(-0.5 * ((time - b) / width) ** 2)
        x -= 0.15 * np.exp(-0.5 * ((time - b - 2.5 * width) / width) ** 2)
        x += 0.12 * np.exp(-0.5 * ((time - b + 0.16) / 0.025) ** 2)
        x += 0.25 * np.exp(-0.5 * ((time - b - 0.28) / 0.05) ** 2)
    return x


def _pulse(time, beats, amplitude, delay=0.2):
    """A pulsatile wave (fast upstroke, slow decay) following each beat."""
    x = np.zeros_like(time)
    for b in beats:
        s = time - b - delay
        x += amplitude * np.where(s > 0, (s / 0.12) * np.exp(1.0 - s / 0.12), 0.0)
    return x


def icu_alarms(
    seed: int,
    *,
    num_windows: int = 1000,
    num_samples: int = 256,
    sampling_rate: float = 64.0,
    true_fraction: float = 0.4,
    missing_stream_prob: float = 0.15,
    missing_segment_prob: float = 0.2,
    noise_std: float = 0.1,
) -> ICUAlarms:
    r"""Generates synthetic ICU alarm windows with true and false alarms.

    Every window ends at an alarm of one of the five PhysioNet/CinC 2015 types
    (:data:`ALARM_TYPES`, drawn uniformly) and holds three streams: an ECG-like
    spike train, a pulsatile (PPG/ABP-like) wave that follows the heart beats,
    and a respiration wave. A *true* alarm (probability ``true_fraction``)
    carries the arrhythmia in both heart streams: asystole (flat ECG, no
    pulse), bradycardia (30–45 bpm), tachycardia (130–180 bpm, weaker pulse),
    ventricular tachycardia (wide complexes at 140–200 bpm, weak pulse) or
    ventricular flutter/fibrillation (a 3–6 Hz oscillation, no pulse). A
    *false* alarm has a normal rhythm (55–100 bpm) whose ECG is corrupted by an
    artefact that mimics the alarm — a lead-off flat stretch, dropped
    complexes, extra spikes, or 3–6 Hz motion noise — while the pulse stays
    regular. Each window's pulse stream is absent with probability
    ``missing_stream_prob`` (zeros, flagged in ``missing``), and with probability
    ``missing_segment_prob`` a random stretch of one stream is zeroed. Amplitudes,
    baselines and Gaussian noise (``noise_std``) vary per window.

    A pure function of ``seed`` (NumPy's ``default_rng``). Stand-in for the
    private data of Schwab et al., "Not to Cry Wolf", ICML 2018,
    https://arxiv.org/abs/1802.05027.

    Args:
      seed: the random seed.
      num_windows: ``N``.
      num_samples: ``T``, samples per stream (``T / sampling_rate`` seconds).
      sampling_rate: samples per second.
      true_fraction: probability that a window is a true alarm.
      missing_stream_prob: probability that the pulse stream is absent.
      missing_segment_prob: probability of a zeroed stretch in one stream.
      noise_std: standard deviation of the additive sensor noise.

    Returns:
      :class:`ICUAlarms` of NumPy arrays.
    """
    _validate.check_int("num_windows", num_windows)
    if not isinstance(num_samples, int) or num_samples < 65:
        raise ValueError(f"num_samples must be an int >= 65; got {num_samples!r}")
    if not sampling_rate > 0:
        raise ValueError(f"sampling_rate must be positive; got {sampling_rate}")
    for name, p in (
        ("true_fraction", true_fraction),
        ("missing_stream_prob", missing_stream_prob),
        ("missing_segment_prob", missing_segment_prob),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {p}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}")
    rng = np.random.default_rng(seed)
    fs, n, t = float(sampling_rate), num_windows, num_samples
    time = np.arange(t) / fs
    dur = t / fs
    windows = np.zeros((n, 3, t), np.float64)
    missing = np.zeros((n, 3), np.float32)
    labels = (rng.random(n) < true_fraction).astype(np.int32)
    kinds = rng.integers(0, len(ALARM_TYPES), n).astype(np.int32)
    for i in range(n):
        kind, true = int(kinds[i]), bool(labels[i])
        width = 0.02 * rng.uniform(0.8, 1.25)
        pulse_amp = rng.uniform(0.6, 1.2)
        rate = rng.uniform(55, 100)
        if true and kind == 0:  # asystole: nothing after a random onset
            onset = rng.uniform(0.0, 0.5 * dur)
            beats = _beats(rng, dur, fs, rate, 0.03)
            beats = beats[beats < onset]
            ecg, pulse = _ecg(rng, time, beats, width), _pulse(time, beats, pulse_amp)
        elif true and kind == 1:
            beats = _beats(rng, dur, fs, rng.uniform(30, 45), 0.05)
            ecg, pulse = _ecg(rng, time, beats, width), _pulse(time, beats, pulse_amp)
        elif true and kind == 2:
            beats = _beats(rng, dur, fs, rng.uniform(130, 180), 0.03)
            ecg, pulse = _ecg(rng, time, beats, width), _pulse(time, beats, 0.6 * pulse_amp)
        elif true and kind == 3:
            beats = _beats(rng, dur, fs, rng.uniform(140, 200), 0.05)
            ecg = _ecg(rng, time, beats, 3.0 * width)
            pulse = _pulse(time, beats, 0.3 * pulse_amp)
        elif true:  # flutter / fibrillation
            f = rng.uniform(3.0, 6.0)
            phase = np.cumsum(2 * np.pi * f * (1 + 0.2 * rng.normal(size=t)) / fs)
            ecg = rng.uniform(0.4, 1.0) * np.sin(phase)
            pulse = np.zeros(t)
        else:  # false alarm: normal rhythm, artefact on the ECG only
            beats = _beats(rng, dur, fs, rate, 0.03)
            ecg, pulse = _ecg(rng, time, beats, width), _pulse(time, beats, pulse_amp)
            a, b = sorted(rng.uniform(0, dur, 2))
            stretch = (time >= a) & (time <= max(b, a + 0.3 * dur))
            if kind in (0, 1):  # lead-off flat stretch / dropped complexes
                ecg = np.where(stretch, 0.0, ecg)
                if kind == 1:
                    keep = beats[rng.random(len(beats)) < 0.5]
                    ecg = _ecg(rng, time, keep, width)
            elif kind == 2:  # extra spikes between the beats
                extra = rng.uniform(0, dur, size=len(beats) + 2)
                ecg = ecg + _ecg(rng, time, extra, 0.6 * width)
            else:  # motion noise
                f = rng.uniform(3.0, 6.0)
                ecg = ecg + np.where(
                    stretch, rng.uniform(0.5, 1.2) * np.sin(2 * np.pi * f * time), 0.0
                )
        resp = rng.uniform(0.3, 0.8) * np.sin(
            2 * np.pi * rng.uniform(0.2, 0.4) * time + rng.uniform(0, 2 * np.pi)
        )
        x = np.stack([rng.uniform(0.7, 1.4) * ecg, pulse, resp])
        x += rng.normal(0, 0.2, size=(3, 1))  # baseline offsets
        x += noise_std * rng.normal(size=x.shape)
        if rng.random() < missing_stream_prob:
            x[1] = 0.0
            missing[i, 1] = 1.0
        if rng.random() < missing_segment_prob:
            s = rng.integers(0, 3)
            a = rng.integers(0, t // 2)
            x[s, a : a + rng.integers(t // 8, t // 3)] = 0.0
        windows[i] = x
    return ICUAlarms(windows.astype(np.float32), missing, labels, kinds)
