"""scripts/make_corpus.py: the pure parts (split, packing, excerpts, manifest, OUT checks, decoding
rules). No network, no apt, no package: the full build is run by hand (see the script's docstring)."""
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "make_corpus.py"


def _load():
    spec = importlib.util.spec_from_file_location("make_corpus", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_corpus"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


mc = _load()

BRITISH = "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices/British/"
WORDS = ["Amazing", "Boring", "Brilliant", "Bugger", "Byebye", "Comeonthen", "Coward", "Cutitout",
         "Drat", "Enemydown"]


# -- split -----------------------------------------------------------------------------------------

def test_stable_unit_is_sha256_of_the_key():
    key = BRITISH + "Amazing.ogg"
    expected = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0 ** 64
    assert mc.stable_unit(key) == expected
    assert mc.stable_unit(key) == pytest.approx(0.23340513563561052, abs=1e-15)
    assert mc.stable_unit(key, "select\0") != mc.stable_unit(key)


def test_split_is_stable_and_by_source_file():
    keys = [BRITISH + w + ".ogg" for w in WORDS]
    split = mc.assign_splits({("speech", "hedgewars-data"): keys}, 0.2)
    val = sorted(k[len(BRITISH):] for k, s in split.items() if s == "validation")
    assert val == ["Byebye.ogg", "Coward.ogg", "Enemydown.ogg"]
    assert len(split) == len(keys)
    # The same answer whatever the order and whatever else is in other groups.
    again = mc.assign_splits({("music", "x"): ["x/a.ogg", "x/b.ogg"],
                              ("speech", "hedgewars-data"): list(reversed(keys))}, 0.2)
    assert {k: again[k] for k in keys} == split
    # A file keeps its side when files are added to its group (when nothing has to move).
    more = mc.assign_splits({("speech", "hedgewars-data"): keys + [BRITISH + "Extra.ogg"]}, 0.2)
    assert {k: more[k] for k in keys} == split


def test_split_fraction_is_roughly_kept():
    keys = [f"pkg/file{i:04d}.ogg" for i in range(2000)]
    split = mc.assign_splits({("speech", "pkg"): keys}, 0.2)
    n_val = sum(s == "validation" for s in split.values())
    assert 340 <= n_val <= 460, n_val


def test_split_keeps_one_file_on_each_side():
    keys = [f"pkg/f{i}.ogg" for i in range(5)]
    units = {k: mc.stable_unit(k) for k in keys}
    # A fraction so small that no key falls below it: the smallest hash moves to validation.
    tiny = mc.assign_splits({("music", "pkg"): keys}, 1e-12)
    assert [k for k, s in tiny.items() if s == "validation"] == [min(keys, key=units.get)]
    # So large that all do: the largest hash moves to train.
    huge = mc.assign_splits({("music", "pkg"): keys}, 1 - 1e-12)
    assert [k for k, s in huge.items() if s == "train"] == [max(keys, key=units.get)]
    # Per (category, package): each group gets its own validation file.
    two = mc.assign_splits({("music", "a"): ["a/1", "a/2"], ("speech", "a"): ["a/3", "a/4"]}, 1e-12)
    assert sorted(s for k, s in two.items() if k in ("a/1", "a/2")) == ["train", "validation"]
    assert sorted(s for k, s in two.items() if k in ("a/3", "a/4")) == ["train", "validation"]
    # A group of one file is left where its hash puts it.
    assert mc.assign_splits({("music", "b"): ["b/only"]}, 1e-12) == {"b/only": "train"}
    with pytest.raises(ValueError):
        mc.assign_splits({("music", "b"): ["b/only"]}, 0.0)


def test_selection_order_is_deterministic_and_not_the_split_order():
    keys = [f"pkg/t{i:02d}.ogg" for i in range(40)]
    order = mc.selection_order(keys)
    assert order == mc.selection_order(list(reversed(keys)))
    assert sorted(order) == sorted(keys)
    assert order != sorted(keys, key=mc.stable_unit)


# -- speech concatenation ----------------------------------------------------------------------------

def test_pack_clips_counts_gaps_and_keeps_the_cap():
    assert mc.pack_clips([10, 9], max_len=20, gap=1, min_len=0) == [[0, 1]]  # 10 + 1 + 9 == 20
    assert mc.pack_clips([10, 10], max_len=20, gap=1, min_len=0) == [[0], [1]]  # 21 > 20
    assert mc.pack_clips([4, 30, 4], max_len=20, gap=1, min_len=0) == [[0], [1], [2]]  # too long: alone
    assert mc.pack_clips([], max_len=20, gap=1, min_len=3) == []


def test_pack_clips_rebalances_a_short_last_file():
    # Greedy gives [6, 6, 6] (20) and [1]; the last two are re-split as [6, 6] (13) and [6, 1] (8).
    assert mc.pack_clips([6, 6, 6, 1], max_len=20, gap=1, min_len=3) == [[0, 1], [2, 3]]
    assert mc.pack_clips([6, 6, 6, 1], max_len=20, gap=1, min_len=0) == [[0, 1, 2], [3]]


def test_speech_files_at_24k_are_at_most_20_s_and_at_least_3_s():
    sr = 24000
    lengths = [int(sr * (0.5 + 1.5 * ((i * 7) % 11) / 10)) for i in range(60)]  # 0.5 .. 2 s
    gap = round(mc.SPEECH_GAP_S * sr)
    assert gap == 6000
    groups = mc.pack_clips(lengths, round(mc.SPEECH_MAX_S * sr), gap, round(mc.SPEECH_MIN_S * sr))
    assert [i for g in groups for i in g] == list(range(60))  # every clip once, in order
    spans = [sum(lengths[i] for i in g) + gap * (len(g) - 1) for g in groups]
    assert max(spans) <= 20 * sr
    assert min(spans) >= 3 * sr
    assert len(groups) == 5


def test_concat_with_gaps():
    out = mc.concat_with_gaps([np.ones(3), np.full(2, 2.0), np.full(1, 3.0)], gap=2)
    assert out.dtype == np.float32
    assert out.tolist() == [1, 1, 1, 0, 0, 2, 2, 0, 0, 3]
    assert mc.concat_with_gaps([np.ones(2)], gap=5).tolist() == [1, 1]


# -- music excerpts ------------------------------------------------------------------------------------

def test_excerpt_bounds():
    sr = 100
    cut = dict(excerpt_len=30 * sr, min_len=5 * sr)
    assert mc.excerpt_bounds(70 * sr, **cut) == [(0, 3000), (3000, 6000), (6000, 7000)]
    assert mc.excerpt_bounds(63 * sr, **cut) == [(0, 3000), (3000, 6000)]  # a 3 s tail is dropped
    assert mc.excerpt_bounds(65 * sr, **cut) == [(0, 3000), (3000, 6000), (6000, 6500)]  # 5 s kept
    assert mc.excerpt_bounds(60 * sr, **cut) == [(0, 3000), (3000, 6000)]
    assert mc.excerpt_bounds(4 * sr, **cut) == [(0, 400)]  # the whole file, however short
    assert mc.excerpt_bounds(0, **cut) == []
    assert mc.excerpt_bounds(200 * sr, max_excerpts=3, **cut) == [(0, 3000), (3000, 6000), (6000, 9000)]


# -- manifest -------------------------------------------------------------------------------------------

def test_manifest_rows_and_text():
    row = mc.manifest_row("validation/speech/hedgewars-voices__British-000.flac", "validation", "speech",
                          "hedgewars-data", "1.0.2-6", ["usr/a/One.ogg", "usr/a/Two.ogg"], "GFDL-1.3",
                          n_samples=36000, sample_rate=24000)
    assert row == {"path": "validation/speech/hedgewars-voices__British-000.flac", "split": "validation",
                   "category": "speech", "package": "hedgewars-data", "version": "1.0.2-6",
                   "source_paths": "usr/a/One.ogg;usr/a/Two.ogg", "license": "GFDL-1.3",
                   "seconds": "1.500", "sample_rate": "24000"}
    other = mc.manifest_row("train/music/wesnoth__battle-00.flac", "train", "music", "wesnoth-1.16-music",
                            "1:1.16.9-1", ["usr/m/battle.ogg"], "GPL-2+", 720000, 24000)
    text = mc.format_manifest([row, other])
    assert text == (
        "path,split,category,package,version,source_paths,license,seconds,sample_rate\n"
        "train/music/wesnoth__battle-00.flac,train,music,wesnoth-1.16-music,1:1.16.9-1,"
        "usr/m/battle.ogg,GPL-2+,30.000,24000\n"
        "validation/speech/hedgewars-voices__British-000.flac,validation,speech,hedgewars-data,1.0.2-6,"
        "usr/a/One.ogg;usr/a/Two.ogg,GFDL-1.3,1.500,24000\n")
    assert mc.totals([row, other]) == {("train", "music"): (1, 30.0), ("validation", "speech"): (1, 1.5)}
    with pytest.raises(ValueError):
        mc.manifest_row("p", "train", "music", "x", "1", ["a;b.ogg"], "GPL-2", 1, 1)


def test_output_names():
    assert mc.output_relpath("train", "speech", "ktuberling", "sr_latin-001") == \
        "train/speech/ktuberling__sr_latin-001.flac"
    assert mc.safe_name("sr@ijekavian latin/x") == "sr_ijekavian_latin_x"


# -- OUT checks ------------------------------------------------------------------------------------------

def test_check_out_dir(tmp_path):
    fp = mc.fingerprint(24000, 0.2)
    mc.check_out_dir(tmp_path / "missing", fp, force=False)
    mc.check_out_dir(tmp_path, fp, force=False)  # empty
    (tmp_path / "afile").write_text("x")
    with pytest.raises(mc.CorpusError, match="not a directory"):
        mc.check_out_dir(tmp_path / "afile", fp, force=True)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / ".debs").mkdir()
    mc.check_out_dir(corpus, fp, force=False, ignore=[".debs"])  # only the cache: fine
    (corpus / "notes.txt").write_text("mine")
    with pytest.raises(mc.CorpusError, match="holds no corpus"):
        mc.check_out_dir(corpus, fp, force=False, ignore=[".debs"])
    mc.check_out_dir(corpus, fp, force=True, ignore=[".debs"])

    (corpus / mc.MARKER).write_text(json.dumps(fp))
    mc.check_out_dir(corpus, fp, force=False)  # the same corpus: rebuilt in place
    other = mc.fingerprint(16000, 0.2)
    with pytest.raises(mc.CorpusError, match=r"different corpus \(sample_rate 24000 \(now 16000\)\)"):
        mc.check_out_dir(corpus, other, force=False)
    mc.check_out_dir(corpus, other, force=True)


def _no_fetch(cache, pkg):
    raise AssertionError(f"the build went on to fetch {pkg.name}")


def test_main_refuses_bad_out_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mc, "fetch_deb", _no_fetch)  # a refusal that fails must not download
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert mc.main([str(afile)]) == 1
    err = capsys.readouterr().err
    assert err == f"make_corpus: error: {afile} exists and is not a directory\n"

    out = tmp_path / "corpus"
    out.mkdir()
    (out / mc.MARKER).write_text(json.dumps(mc.fingerprint(24000, 0.2)))
    assert mc.main([str(out), "--sample-rate", "16000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"make_corpus: error: {out} holds a different corpus") and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [mc.MARKER]  # nothing written
    monkeypatch.setattr(mc.shutil, "which", lambda name: "/usr/bin/" + name)  # dpkg-deb need not be here
    assert mc.main([str(out), "--cache", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is the output folder itself" in err and err.count("\n") == 1


def test_main_without_dpkg_deb(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mc, "fetch_deb", _no_fetch)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert mc.main([str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("make_corpus: error: dpkg-deb not found")
    assert not (tmp_path / "out").exists()


def test_fingerprint_follows_settings():
    assert mc.fingerprint(24000, 0.2) == mc.fingerprint(24000, 0.2)
    assert mc.fingerprint(24000, 0.2) != mc.fingerprint(24000, 0.25)
    assert mc.fingerprint(24000, 0.2)["sample_rate"] == 24000


# -- licenses ---------------------------------------------------------------------------------------------

def test_dep5_license_last_matching_stanza_wins():
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: someone\nLicense: GPL-2\n\n"
            "Files: share/hedgewars/Data/Sounds/*\n  share/other/?.ogg\nCopyright:\n\tsomeone\n"
            "License: GFDL-1.3\n\n"
            "License: GPL-2\n The text.\n")
    stanzas = mc.parse_dep5(text)
    assert stanzas == [(("*",), "GPL-2"), (("share/hedgewars/Data/Sounds/*", "share/other/?.ogg"), "GFDL-1.3")]
    assert mc.dep5_license("share/hedgewars/Data/Sounds/voices/British/Amazing.ogg", stanzas) == "GFDL-1.3"
    assert mc.dep5_license("share/hedgewars/Data/Music/Art.ogg", stanzas) == "GPL-2"
    assert mc.dep5_license("share/other/a.ogg", stanzas) == "GFDL-1.3"
    assert mc.dep5_license("share/other/ab.ogg", stanzas) == "GPL-2"
    assert mc.parse_dep5("This package was debianized by someone.\nLicense: GPL\n") is None


def test_table_is_consistent():
    assert {s.package for s in mc.SOURCES} == set(mc.PACKAGES)
    assert len({s.id for s in mc.SOURCES}) == len(mc.SOURCES)
    for p in mc.PACKAGES.values():
        assert len(p.sha256) == 64 and p.version
    assert sum(p.size for p in mc.PACKAGES.values()) < 400e6


# -- decoding rules -------------------------------------------------------------------------------------

def test_load_clip_mono_resample_and_skips(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("soxr")
    t = np.arange(48000) / 48000.0
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([left, np.zeros_like(left)], 1), 48000, subtype="FLOAT")
    x, why = mc.load_clip(tmp_path / "stereo.wav", 24000)
    assert why == "" and x.dtype == np.float32 and len(x) == 24000
    assert np.max(np.abs(x[1000:-1000])) == pytest.approx(0.25, abs=2e-3)  # the channel mean

    loud = np.sign(np.sin(2 * np.pi * 1000 * t))  # a square wave: resampling overshoots 1.0
    sf.write(tmp_path / "loud.wav", loud, 48000, subtype="FLOAT")
    x, why = mc.load_clip(tmp_path / "loud.wav", 24000)
    assert why == "" and np.max(np.abs(x)) <= 32767 / 32768

    sf.write(tmp_path / "silent.wav", np.full(4800, 5e-5), 48000, subtype="FLOAT")
    assert mc.load_clip(tmp_path / "silent.wav", 24000) == (None, "silent")
    bad = left.copy()
    bad[10] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 48000, subtype="FLOAT")
    assert mc.load_clip(tmp_path / "nan.wav", 24000) == (None, "non-finite samples")
    sf.write(tmp_path / "narrow.wav", left[:8000], 8000)
    assert mc.load_clip(tmp_path / "narrow.wav", 24000)[1].startswith("band-limited")
    (tmp_path / "junk.ogg").write_bytes(b"not audio")
    assert mc.load_clip(tmp_path / "junk.ogg", 24000)[1].startswith("undecodable")


def test_to_pcm16():
    assert mc.to_pcm16(np.array([0.0, 1.0, -1.0, 0.25, 2.0, -2.0])).tolist() == \
        [0, 32767, -32767, 8192, 32767, -32768]
