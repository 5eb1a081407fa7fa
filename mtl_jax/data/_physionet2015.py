"""Reader for the PhysioNet/CinC Challenge 2015 false-alarm records (WFDB format).

Clifford et al., "The PhysioNet/Computing in Cardiology Challenge 2015: Reducing
False Arrhythmia Alarms in the ICU", CinC 2015,
https://physionet.org/content/challenge-2015/. The public analogue of the
private data of Schwab et al., "Not to Cry Wolf", ICML 2018,
https://arxiv.org/abs/1802.05027. Reads from a directory the user downloaded;
nothing is fetched.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import numpy as np

from mtl_jax.data._icu_alarms import ALARM_TYPES

__all__ = ["PHYSIONET_STREAMS", "PhysioNetAlarms", "load_physionet_2015"]

PHYSIONET_STREAMS: tuple[str, ...] = ("ecg1", "ecg2", "ppg", "abp")
"""The streams of :func:`load_physionet_2015`: the first two ECG leads, PPG, ABP."""

_ECG = {"I", "II", "III", "V", "AVR", "AVL", "AVF", "MCL", "MCL1"}
_HEADER_TYPES = {
    "asystole": 0,
    "bradycardia": 1,
    "tachycardia": 2,
    "ventricular_tachycardia": 3,
    "ventricular_flutter_fib": 4,
}


class PhysioNetAlarms(NamedTuple):
    """Records from :func:`load_physionet_2015` (all NumPy).

    Attributes:
      windows: ``[N, 4, T]`` float32, the ``seconds`` before the alarm in
        :data:`PHYSIONET_STREAMS` order; absent streams and NaN samples are 0.
      missing: ``[N, 4]`` float32, 1 where a stream is absent from the record.
      labels: ``[N]`` int32, 1 for a true alarm, 0 for a false alarm.
      alarm_type: ``[N]`` int32 index into :data:`~mtl_jax.data.ALARM_TYPES`.
      names: the record names.
    """

    windows: np.ndarray
    missing: np.ndarray
    labels: np.ndarray
    alarm_type: np.ndarray
    names: tuple[str, ...]


def _stream_index(sig_name: str, taken: set[int]) -> int | None:
    name = sig_name.strip().upper()
    if name in _ECG:
        for i in (0, 1):
            if i not in taken:
                return i
        return None
    if name == "PLETH":
        return 2
    if name == "ABP":
        return 3
    return None


def load_physionet_2015(
    directory,
    *,
    seconds: float = 16.0,
    alarm_time: float = 300.0,
    records=None,
) -> PhysioNetAlarms:
    r"""Reads PhysioNet/CinC 2015 alarm records into fixed-size windows.

    Each record (``NAME.hea`` + signal file, read with ``wfdb.rdrecord``) holds
    up to two ECG leads plus PPG (``PLETH``) and/or ABP at 250 Hz; the alarm
    sounds at ``alarm_time`` (5:00). The header's comment lines give the alarm
    type (``Asystole``, ``Bradycardia``, ``Tachycardia``,
    ``Ventricular_Tachycardia``, ``Ventricular_Flutter_Fib``) and ``True alarm``
    or ``False alarm``. The window is the ``seconds`` up to the alarm,
    :math:`[t_a - s, t_a)` in samples at the record's frequency. Other channels
    (e.g. ``RESP``) are ignored.

    Clifford et al., CinC 2015, https://physionet.org/content/challenge-2015/;
    used as the public analogue of Schwab et al., "Not to Cry Wolf", ICML 2018,
    https://arxiv.org/abs/1802.05027.

    Args:
      directory: the folder holding the records (and optionally a ``RECORDS``
        file listing them).
      seconds: window length before the alarm.
      alarm_time: the alarm's time in seconds from the record start.
      records: record names to read (default: the ``RECORDS`` file, else every
        ``*.hea`` in ``directory``, sorted).

    Returns:
      :class:`PhysioNetAlarms`.
    """
    import wfdb

    root = pathlib.Path(directory)
    if not root.is_dir():
        raise ValueError(f"directory {str(directory)!r} is not a directory")
    if not seconds > 0 or not alarm_time >= seconds:
        raise ValueError(f"need 0 < seconds <= alarm_time; got seconds={seconds}, {alarm_time=}")
    if records is None:
        listing = root / "RECORDS"
        if listing.exists():
            records = [r.strip() for r in listing.read_text().split() if r.strip()]
        else:
            records = sorted(p.stem for p in root.glob("*.hea"))
    records = tuple(records)
    if not records:
        raise ValueError(f"no WFDB records found in {str(directory)!r}")
    windows, missing, labels, kinds = [], [], [], []
    length = None
    for name in records:
        rec = wfdb.rdrecord(str(root / name))
        fs = float(rec.fs)
        start, stop = round((alarm_time - seconds) * fs), round(alarm_time * fs)
        if length is None:
            length = stop - start
        if stop - start != length:
            raise ValueError(f"record {name!r} has sampling rate {fs}, unlike the first record")
        if rec.sig_len < stop:
            raise ValueError(f"record {name!r} ends at {rec.sig_len / fs:.1f} s, before the alarm")
        comments = [c.strip().lower().replace(" ", "_") for c in rec.comments]
        kind = next((_HEADER_TYPES[c] for c in comments if c in _HEADER_TYPES), None)
        truth = [c for c in comments if c in ("true_alarm", "false_alarm")]
        if kind is None or not truth:
            raise ValueError(
                f"record {name!r} lacks the alarm type or label comments: {rec.comments}"
            )
        x = np.zeros((len(PHYSIONET_STREAMS), length), np.float32)
        miss = np.ones(len(PHYSIONET_STREAMS), np.float32)
        taken: set[int] = set()
        for j, sig in enumerate(rec.sig_name):
            s = _stream_index(sig, taken)
            if s is None or s in taken:
                continue
            taken.add(s)
            x[s] = np.nan_to_num(rec.p_signal[start:stop, j].astype(np.float32))
            miss[s] = 0.0
        windows.append(x)
        missing.append(miss)
        labels.append(int(truth[0] == "true_alarm"))
        kinds.append(kind)
    assert len(ALARM_TYPES) == len(_HEADER_TYPES)
    return PhysioNetAlarms(
        np.stack(windows),
        np.stack(missing),
        np.asarray(labels, np.int32),
        np.asarray(kinds, np.int32),
        records,
    )
