"""The PhysioNet/CinC 2015 reader on WFDB records the test writes itself."""

import numpy as np
import pytest

from mtl_jax import data

wfdb = pytest.importorskip("wfdb")


def _write(tmp_path, name, channels, comments, fs=250, seconds=302, seed=0):
    rng = np.random.default_rng(seed)
    sig = rng.normal(size=(int(fs * seconds), len(channels))).cumsum(0) * 0.01
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(channels),
        sig_name=list(channels),
        p_signal=sig,
        fmt=["16"] * len(channels),
        comments=comments,
        write_dir=str(tmp_path),
    )
    return sig


def test_reads_written_records(tmp_path):
    s1 = _write(tmp_path, "a103l", ["II", "V", "PLETH"], ["Asystole", "False alarm"], seed=1)
    s2 = _write(
        tmp_path, "v131l", ["II", "aVF", "ABP", "RESP"], ["Ventricular_Tachycardia", "True alarm"]
    )
    (tmp_path / "RECORDS").write_text("a103l\nv131l\n")
    out = data.load_physionet_2015(tmp_path, seconds=4.0)
    assert out.names == ("a103l", "v131l")
    assert out.windows.shape == (2, 4, 1000) and out.windows.dtype == np.float32
    np.testing.assert_array_equal(out.labels, [0, 1])
    assert [data.ALARM_TYPES[k] for k in out.alarm_type] == ["asystole", "ventricular_tachycardia"]
    np.testing.assert_array_equal(out.missing, [[0, 0, 0, 1], [0, 0, 1, 0]])
    # The window is the 4 s before the alarm at 5:00 (samples 74000..74999 at 250 Hz),
    # equal to the written signal up to the 16-bit quantisation.
    a, b = 296 * 250, 300 * 250
    np.testing.assert_allclose(out.windows[0, 2], s1[a:b, 2], atol=1e-3)
    np.testing.assert_allclose(out.windows[1, 3], s2[a:b, 2], atol=1e-3)
    np.testing.assert_allclose(out.windows[1, 1], s2[a:b, 1], atol=1e-3)
    assert (out.windows[0, 3] == 0).all()


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no WFDB records"):
        data.load_physionet_2015(tmp_path)
    _write(tmp_path, "b1", ["II"], ["Tachycardia"], seconds=301)
    with pytest.raises(ValueError, match="label comments"):
        data.load_physionet_2015(tmp_path)
    with pytest.raises(ValueError, match="seconds"):
        data.load_physionet_2015(tmp_path, seconds=-1.0)
