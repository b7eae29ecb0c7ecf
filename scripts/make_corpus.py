#!/usr/bin/env python3
"""Build a small real-audio train/validation corpus (speech + music) from pinned Debian packages.

Usage:

    python scripts/make_corpus.py OUT [--cache DIR] [--sample-rate 24000] [--validation-fraction 0.2] [--force]

Anyone can rebuild the same corpus: the packages and their versions (and the sha256 of each .deb)
are pinned in PACKAGES below, and every choice after that is deterministic (sorted iteration,
sha256-based split and selection, no clocks, no randomness), so two runs give byte-identical
manifest.csv, README.txt and FLAC files (on the same libsndfile/soxr builds).

What it does:
  1. Fetches each pinned .deb into --cache (default OUT/.debs) with `apt-get download PKG=VERSION`,
     unless a .deb with the pinned sha256 is already there (then neither apt nor the network is
     needed), and extracts it with `dpkg-deb -x` into a temporary folder inside the cache.
  2. Takes the audio files under each source's folder (SOURCES below; real recordings only), drops
     byte-identical duplicates (the first in table order, then sorted path, is kept), reads the
     license of the files used from usr/share/doc/PKG/copyright and checks it against the table.
  3. Decodes each file with soundfile, mixes to mono (channel mean), resamples with soxr to
     --sample-rate (float64 in, float32 out), and skips silent (peak < 1e-4), non-finite and
     band-limited files (native rate below min(--sample-rate, 44100)); a file whose resampled
     peak exceeds 1.0 is scaled down to just below it rather than clipped.
  4. Splits by source file: a file is validation when sha256("package/path") maps below
     --validation-fraction; every (category, package) with >= 2 files gets at least one file on
     each side (the file nearest the threshold moves).
  5. Speech clips (0.5-2 s each) of one speaker and one split are concatenated in sorted order with
     0.25 s of silence between them into files of at most 20 s (a short last file is rebalanced
     with the one before it; a file still under 3 s, i.e. a speaker with less than 3 s in a split,
     is dropped, so that every speech file gives metrics such as STOI >= 3 s). Music tracks
     are cut into consecutive 30 s excerpts (a last piece under 5 s is dropped unless it is the
     whole track), at most MUSIC_MAX_EXCERPTS_PER_TRACK per track.
  6. Writes, atomically (temporary name, then os.replace):
       OUT/train/<category>/<source>__<name>.flac        mono, --sample-rate, PCM_16 FLAC
       OUT/validation/<category>/<source>__<name>.flac
       OUT/manifest.csv   path, split, category, package, version, source_paths, license, seconds,
                          sample_rate (source_paths: ';'-joined paths inside the package)
       OUT/README.txt     what this is, the command, totals per split and category, licenses
       OUT/corpus.json    the settings this corpus was built with (used to recognise it)
     A rebuild into the same OUT with the same settings overwrites it (and removes files that the
     previous manifest listed and the new one does not); an OUT holding another corpus, or
     anything else, is refused unless --force.

Output names: <name> is <speaker>-NNN for speech (NNN counts that speaker's files in the split) and
<track>-KK for music (excerpt KK starts at KK*30 s). A build downloads 345 MB once, extracts about
375 MB into the cache for its duration, and takes about a minute of one core and 1.3 GB of memory.

Needs: dpkg-deb (always), apt-get (only for a .deb that is not in the cache yet), and in Python
numpy, soundfile (libsndfile >= 1.0.29 for Ogg Opus) and soxr. Bad input is reported in one line
on stderr with exit status 1.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

# ------------------------------------------------------------------------------------------------
# The pinned inputs. Changing anything here changes the corpus (and its fingerprint in corpus.json).
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str  # of the .deb, as `apt-cache show PKG=VERSION` lists it
    size: int  # bytes of the .deb
    # The DEP-5 copyright file names upstream source paths; (installed prefix, upstream prefix)
    # maps a path inside the package onto them.
    upstream_prefix: tuple[str, str] = ("", "")


PACKAGES: dict[str, Package] = {p.name: p for p in (
    # Debian 12 (bookworm), 345 MB in all.
    Package("hedgewars-data", "1.0.2-6",
            "722225903a72604403e6e0026e40e9a6953f47a74d94efc5f55504bc05bb4761", 145330284,
            ("usr/share/games/hedgewars/", "share/hedgewars/")),
    Package("ktuberling-data", "4:22.12.3-1",
            "fba44c875bfa31ea488dadd9263e87a4dcaea0bd47d28817f6c0dc6d2af970ed", 46661752,
            ("usr/share/ktuberling/", "")),
    Package("wesnoth-1.16-music", "1:1.16.9-1",
            "f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb", 153244368),
)}


@dataclass(frozen=True)
class Source:
    id: str  # the <source> in output names
    package: str
    category: str  # "speech" or "music"
    root: str  # folder inside the package
    speakers: bool  # speech: one sub-folder of root per speaker (its name is the speaker id)
    cap: int | None  # most source files taken per speaker (speech) or per source (music)
    exclude: tuple[str, ...]  # names relative to root (folders or files) left out
    license: str  # license of the files used, as the package's copyright file gives it (checked)
    # For a copyright file that is not machine-readable (DEP-5): a phrase it must contain, which
    # states that license (whitespace-normalised).
    license_evidence: str | None = None


# Caps (cap=): at most 80 clips per KTuberling language, 12 tracks per music source and
# MUSIC_MAX_EXCERPTS_PER_TRACK (3, i.e. 90 s) per track, taken in selection_order() (a salted
# sha256 order, independent of the split); a file that is skipped does not count against a cap.
# That gives about 36 minutes of speech and 34 of music. Looked at and not used: gcompris-qt-data
# 3.1-2 holds no voice recordings (GCompris downloads its voices at run time); klettres-data has
# only letters and syllables; extremetuxracer-data and supertux-data music is mostly
# synthesizer/chiptune.
SOURCES: tuple[Source, ...] = (
    # Hedgewars voice packs: 15 packs of short in-game lines (English accents, Spanish, Polish,
    # Russian, Ukrainian), human voice actors. "Robot" is left out: a robot effect makes it
    # monotone (pitch spread within a clip about 0.5 semitone, rough autocorrelation estimate,
    # against 1.7-5.7 for the other packs). 35 files are byte-identical copies of others (Classic,
    # Default, Default_uk, ...): the first copy is kept. "Files: share/hedgewars/Data/Sounds/*".
    Source("hedgewars-voices", "hedgewars-data", "speech",
           "usr/share/games/hedgewars/Data/Sounds/voices", speakers=True, cap=None,
           exclude=("Robot",), license="GFDL-1.3"),
    # KTuberling: single words spoken by KDE translators in 26 languages (one folder per language;
    # a folder may hold more than one speaker). 8 kHz and 22.05 kHz recordings fall to the
    # band-limit rule, as do all four (identical) Serbian folders at 24 kHz. "Files: *".
    Source("ktuberling", "ktuberling-data", "speech", "usr/share/ktuberling/sounds",
           speakers=True, cap=80, exclude=(), license="GPL-2+"),
    # Hedgewars music: 26 game tracks, various composers (Data/Music/credits.txt). "Files: *".
    # Left out: two tracks that credits.txt traces to other licensors (sdmusic.ogg: an edit of
    # Kevin MacLeod's "Hitman"; olympics_sd.ogg: from OpenGameArt), which the GPL-2 stanza may not cover.
    Source("hedgewars-music", "hedgewars-data", "music", "usr/share/games/hedgewars/Data/Music",
           speakers=False, cap=12, exclude=("sdmusic.ogg", "olympics_sd.ogg"), license="GPL-2"),
    # Battle for Wesnoth: 41 orchestral and folk-style tracks with acoustic-instrument timbres
    # (largely sample-library productions rather than live sessions, as is all game music found
    # in Debian), the closest to recorded acoustic music among the packages looked at. silence.ogg
    # is 10 s of near-silence (peak 1.2e-4, just above the silence rule). Not DEP-5: one GPL-2+
    # notice covers the package.
    Source("wesnoth", "wesnoth-1.16-music", "music", "usr/share/games/wesnoth/1.16/data/core/music",
           speakers=False, cap=12, exclude=("silence.ogg",), license="GPL-2+",
           license_evidence="under the terms of the GNU General Public License version 2 "
                            "or at your option any later version"),
)

AUDIO_SUFFIXES = (".flac", ".oga", ".ogg", ".opus", ".wav")
SILENCE_PEAK = 1e-4
NATIVE_RATE_FLOOR = 44100  # a file below min(--sample-rate, this) is band-limited: skipped
SPEECH_GAP_S = 0.25
SPEECH_MAX_S = 20.0
SPEECH_MIN_S = 3.0  # a shorter last speech file is rebalanced with the one before; still shorter: dropped
MUSIC_EXCERPT_S = 30.0
MUSIC_MIN_EXCERPT_S = 5.0
MUSIC_MAX_EXCERPTS_PER_TRACK = 3
CORPUS_FORMAT = 1
MARKER = "corpus.json"
SPLITS = ("train", "validation")
MANIFEST_COLUMNS = ("path", "split", "category", "package", "version", "source_paths", "license",
                    "seconds", "sample_rate")


class CorpusError(Exception):
    """Bad input or environment: reported as one line on stderr, exit status 1."""


# ------------------------------------------------------------------------------------------------
# Pure helpers (tests/test_make_corpus.py imports these).
# ------------------------------------------------------------------------------------------------


def stable_unit(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by `key` (sha256; never Python's per-process `hash`)."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def selection_order(keys: Iterable[str]) -> list[str]:
    """The order in which capped sources take files: sha256 with a salt, so that it does not
    correlate with the split (which hashes the same keys without one)."""
    return sorted(keys, key=lambda k: (stable_unit(k, "select\0"), k))


def assign_splits(groups: Mapping[tuple[str, ...], Iterable[str]], fraction: float) -> dict[str, str]:
    """Map each key ("package/path") to "train" or "validation".

    A key is validation when stable_unit(key) < fraction. In a group (category, package) of >= 2
    keys, both sides get at least one: if none is validation, the key with the smallest hash moves
    there; if none is train, the key with the largest hash moves to train.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    split: dict[str, str] = {}
    for group in sorted(groups):
        keys = sorted(set(groups[group]))
        units = {k: stable_unit(k) for k in keys}
        for k in keys:
            if k in split:
                raise ValueError(f"key {k!r} is in two groups")
            split[k] = "validation" if units[k] < fraction else "train"
        if len(keys) >= 2:
            val = [k for k in keys if split[k] == "validation"]
            if not val:
                split[min(keys, key=lambda k: (units[k], k))] = "validation"
            elif len(val) == len(keys):
                split[max(keys, key=lambda k: (units[k], k))] = "train"
    return split


def pack_clips(lengths: Sequence[int], max_len: int, gap: int, min_len: int) -> list[list[int]]:
    """Group consecutive clips (given by their lengths in samples) into files of at most max_len
    samples, counting `gap` samples of silence between neighbours.

    Greedy in order; a clip longer than max_len gets a file of its own. When the last file is
    shorter than min_len, it and the one before it are re-split where the longer of the two is
    shortest (never longer than before). Returns lists of clip indices.
    """
    def span(idx: Sequence[int]) -> int:
        return sum(lengths[i] for i in idx) + gap * (len(idx) - 1)

    groups: list[list[int]] = []
    cur: list[int] = []
    for i, n in enumerate(lengths):
        if cur and span(cur) + gap + n > max_len:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    if len(groups) >= 2 and span(groups[-1]) < min_len:
        merged = groups[-2] + groups[-1]
        k = min(range(1, len(merged)), key=lambda k: (max(span(merged[:k]), span(merged[k:])), k))
        groups[-2:] = [merged[:k], merged[k:]]
    return groups


def concat_with_gaps(clips: Sequence[np.ndarray], gap: int) -> np.ndarray:
    """The clips one after another with `gap` zero samples between neighbours (float32)."""
    parts: list[np.ndarray] = []
    for i, c in enumerate(clips):
        if i:
            parts.append(np.zeros(gap, np.float32))
        parts.append(np.asarray(c, np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def excerpt_bounds(n: int, excerpt_len: int, min_len: int, max_excerpts: int | None = None
                   ) -> list[tuple[int, int]]:
    """Consecutive, non-overlapping [start, end) pieces of at most excerpt_len samples covering
    n samples; a last piece shorter than min_len is dropped unless it is the whole signal; at most
    max_excerpts pieces (the first ones)."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(start + excerpt_len, n)
        if end - start < min_len and start > 0:
            break
        bounds.append((start, end))
        start = end
    return bounds if max_excerpts is None else bounds[:max_excerpts]


def safe_name(text: str) -> str:
    """A file-name-safe form: characters outside [A-Za-z0-9._-] become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def output_relpath(split: str, category: str, source_id: str, name: str) -> str:
    return f"{split}/{category}/{source_id}__{name}.flac"


def manifest_row(path: str, split: str, category: str, package: str, version: str,
                 source_paths: Sequence[str], license: str, n_samples: int, sample_rate: int
                 ) -> dict[str, str]:
    for p in source_paths:
        if ";" in p:
            raise ValueError(f"source path {p!r} holds ';', the source_paths separator")
    return {"path": path, "split": split, "category": category, "package": package,
            "version": version, "source_paths": ";".join(source_paths), "license": license,
            "seconds": f"{n_samples / sample_rate:.3f}", "sample_rate": str(sample_rate)}


def format_manifest(rows: Iterable[Mapping[str, str]]) -> str:
    """manifest.csv's text: a header, then the rows sorted by path ('\\n' line ends)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["path"]):
        writer.writerow(row)
    return buf.getvalue()


def totals(rows: Iterable[Mapping[str, str]]) -> dict[tuple[str, str], tuple[int, float]]:
    """(split, category) -> (files, seconds)."""
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for r in rows:
        key = (r["split"], r["category"])
        n, s = out.get(key, (0, 0.0))
        out[key] = (n + 1, s + float(r["seconds"]))
    return dict(sorted(out.items()))


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 (round to nearest, clipped)."""
    return np.clip(np.rint(np.asarray(x, np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def fingerprint(sample_rate: int, validation_fraction: float) -> dict:
    """What makes a corpus this one: the settings and a digest of the pinned table and rules."""
    table = json.dumps({
        "packages": [dataclasses.asdict(p) for p in PACKAGES.values()],
        "sources": [dataclasses.asdict(s) for s in SOURCES],
        "rules": [AUDIO_SUFFIXES, SILENCE_PEAK, NATIVE_RATE_FLOOR, SPEECH_GAP_S, SPEECH_MAX_S,
                  SPEECH_MIN_S, MUSIC_EXCERPT_S, MUSIC_MIN_EXCERPT_S, MUSIC_MAX_EXCERPTS_PER_TRACK],
    }, sort_keys=True)
    return {"corpus_format": CORPUS_FORMAT, "sample_rate": sample_rate,
            "validation_fraction": validation_fraction,
            "sources_sha256": hashlib.sha256(table.encode()).hexdigest()[:16]}


def check_out_dir(out: Path, expected: Mapping, force: bool, ignore: Iterable[str] = ()) -> None:
    """Refuse an OUT that is a file, or holds another corpus or other things, unless force.

    OUT may be missing, empty (apart from the names in `ignore`, e.g. the download cache), or hold
    a corpus whose corpus.json equals `expected` (then it is rebuilt in place).
    """
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out} exists and is not a directory")
    if not out.exists():
        return
    marker = out / MARKER
    if marker.is_file():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found == dict(expected) or force:
            return
        if isinstance(found, dict):
            diff = ", ".join(f"{k} {found.get(k)!r} (now {v!r})" for k, v in expected.items()
                             if found.get(k) != v)
        else:
            diff = f"unreadable {MARKER}"
        raise CorpusError(f"{out} holds a different corpus ({diff}); use --force to replace it")
    skip = set(ignore)
    others = sorted(e.name for e in out.iterdir()
                    if e.name not in skip and not _is_our_temp(e.name))
    if others and not force:
        raise CorpusError(f"{out} is not empty and holds no corpus made by this script "
                          f"(e.g. {others[0]!r}); use --force to write into it anyway")


def _is_our_temp(name: str) -> bool:
    return re.fullmatch(r"\..+\.\d+\.tmp", name) is not None


def parse_dep5(text: str) -> list[tuple[tuple[str, ...], str]] | None:
    """The (Files patterns, License short name) stanzas of a machine-readable copyright file, in
    order; None when the file is not in that format."""
    paragraphs: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                paragraphs.append(cur)
            cur, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                cur[last] += "\n" + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            last = last.strip().lower()
            cur[last] = value.strip()
    if cur:
        paragraphs.append(cur)
    if not paragraphs or "copyright-format" not in paragraphs[0].get("format", ""):
        return None
    return [(tuple(p["files"].split()), p.get("license", "").split("\n")[0].strip())
            for p in paragraphs if "files" in p]


def dep5_license(path: str, stanzas: Sequence[tuple[tuple[str, ...], str]]) -> str | None:
    """The license of `path` (an upstream path): the last stanza whose Files pattern matches it
    ('*' matches any characters, '/' included; '?' one character)."""
    found = None
    for patterns, license in stanzas:
        for pat in patterns:
            rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pat)
            if re.fullmatch(rx, path, re.DOTALL):
                found = license
    return found


# ------------------------------------------------------------------------------------------------
# Fetching and reading packages.
# ------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached_deb(cache: Path, pkg: Package) -> Path | None:
    pattern = f"{pkg.name}_{pkg.version.replace(':', '%3a')}_*.deb"
    for deb in sorted(cache.glob(pattern)):
        got = _sha256_file(deb)
        if got == pkg.sha256:
            return deb
        raise CorpusError(f"{deb} has sha256 {got[:16]}..., not the pinned {pkg.sha256[:16]}...; "
                          f"delete it to download it again")
    return None


def _archive_versions(name: str) -> list[str]:
    try:
        res = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True,
                             env={**os.environ, "LC_ALL": "C"})
    except OSError:
        return []
    versions = []
    in_table = False
    for line in res.stdout.splitlines():
        if line.strip() == "Version table:":
            in_table = True
        elif in_table:
            m = re.fullmatch(r"\s+(?:\*\*\* )?(\S+) -?\d+", line)
            if m:
                versions.append(m.group(1))
    return versions


def fetch_deb(cache: Path, pkg: Package) -> Path:
    """The pinned .deb in the cache, downloaded with apt-get when it is not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    deb = _cached_deb(cache, pkg)
    if deb is not None:
        return deb
    if shutil.which("apt-get") is None:
        raise CorpusError(f"apt-get not found, needed to download {pkg.name}={pkg.version} "
                          f"(or put its .deb into {cache})")
    print(f"  downloading {pkg.name}={pkg.version} ({pkg.size / 1e6:.0f} MB)", flush=True)
    res = subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=cache,
                         capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if res.returncode != 0:
        available = _archive_versions(pkg.name)
        if not available:
            raise CorpusError(f"{pkg.name} is not in the package archive (apt-cache policy "
                              f"{pkg.name} lists no version); pinned: {pkg.version}")
        if pkg.version not in available:
            raise CorpusError(f"{pkg.name} {pkg.version} (pinned) is no longer in the archive; "
                              f"apt-cache policy offers {', '.join(available)}")
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("E:")]
        raise CorpusError(f"apt-get download {pkg.name}={pkg.version} failed: "
                          f"{(errors or res.stderr.strip().splitlines() or ['?'])[-1]}")
    deb = _cached_deb(cache, pkg)
    if deb is None:
        raise CorpusError(f"apt-get download {pkg.name}={pkg.version} left no matching .deb in {cache}")
    return deb


def extract_deb(deb: Path, dest: Path) -> None:
    try:
        res = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    except OSError as e:
        raise CorpusError(f"cannot run dpkg-deb: {e}") from None
    if res.returncode != 0:
        raise CorpusError(f"dpkg-deb -x {deb.name} failed: {res.stderr.strip().splitlines()[-1:]}")


def source_license(src: Source, pkg: Package, tree: Path, paths: Sequence[str]) -> str:
    """The license of the files used, from usr/share/doc/PKG/copyright, checked against the table."""
    cfile = tree / "usr/share/doc" / pkg.name / "copyright"
    try:
        text = cfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise CorpusError(f"{pkg.name} has no readable usr/share/doc/{pkg.name}/copyright") from None
    stanzas = parse_dep5(text)
    if stanzas is None:
        norm = " ".join(text.split())
        if not src.license_evidence or " ".join(src.license_evidence.split()) not in norm:
            raise CorpusError(f"{pkg.name}'s copyright file does not state {src.license} for {src.root}")
        return src.license
    inst, upstream = pkg.upstream_prefix
    found = set()
    for p in paths:
        up = upstream + p[len(inst):] if p.startswith(inst) else p
        found.add(dep5_license(up, stanzas))
    if found != {src.license}:
        raise CorpusError(f"{pkg.name}'s copyright file gives {sorted(map(str, found))} for {src.root}, "
                          f"the table says {src.license}")
    return src.license


# ------------------------------------------------------------------------------------------------
# Decoding and building.
# ------------------------------------------------------------------------------------------------


@dataclass
class Clip:
    source: Source
    path: str  # inside the package
    group: str  # speaker (speech) or "" (music)
    audio: np.ndarray  # mono float32 at the corpus rate


@dataclass
class Output:
    split: str
    category: str
    source: Source
    name: str
    source_paths: tuple[str, ...]
    audio: np.ndarray

    @property
    def relpath(self) -> str:
        return output_relpath(self.split, self.category, self.source.id, self.name)


def load_clip(file: Path, sample_rate: int) -> tuple[np.ndarray | None, str]:
    """(mono float32 at sample_rate, "") or (None, why it is skipped)."""
    import soundfile as sf
    import soxr

    try:
        info = sf.info(str(file))
        if info.samplerate < min(sample_rate, NATIVE_RATE_FLOOR):
            return None, "band-limited (native rate below the floor)"
        x, sr = sf.read(str(file), dtype="float64", always_2d=True)
    except Exception as e:  # libsndfile reports every decoding problem as RuntimeError/LibsndfileError
        return None, f"undecodable ({type(e).__name__})"
    if x.size == 0:
        return None, "empty"
    x = x.mean(axis=1)
    if not np.all(np.isfinite(x)):
        return None, "non-finite samples"
    if np.max(np.abs(x)) < SILENCE_PEAK:
        return None, "silent"
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate)
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
        x = x * (32767.0 / 32768.0 / peak)
    return x.astype(np.float32), ""


def list_candidates(src: Source, tree: Path) -> tuple[dict[str, list[str]], int]:
    """(group -> sorted paths inside the package of the source's audio files, how many audio files
    the table's `exclude` left out)."""
    root = tree / src.root
    if not root.is_dir():
        raise CorpusError(f"{src.package} has no folder {src.root}")
    for e in src.exclude:
        if not (root / e).exists():
            raise CorpusError(f"{src.package} has no {src.root}/{e} (the table excludes it)")
    out: dict[str, list[str]] = {}
    excluded = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            if full.suffix.lower() not in AUDIO_SUFFIXES or not full.is_file():
                continue
            if any(rel == e or rel.startswith(e + "/") for e in src.exclude):
                excluded += 1
                continue
            if src.speakers and "/" not in rel:
                continue  # a file beside the speaker folders belongs to no speaker
            group = rel.split("/")[0] if src.speakers else ""
            out.setdefault(group, []).append(f"{src.root}/{rel}")
    return dict(sorted(out.items())), excluded


def _count(skips: dict[str, int], why: str, n: int = 1) -> None:
    skips[why] = skips.get(why, 0) + n


def collect(trees: Mapping[str, Path], sample_rate: int, skips: dict[str, int]) -> list[Clip]:
    """Decode the files each source takes (deduplicated, capped, filtered)."""
    seen: dict[str, str] = {}
    clips: list[Clip] = []
    for src in SOURCES:
        tree = trees[src.package]
        groups, excluded = list_candidates(src, tree)
        _count(skips, "left out by the table", excluded)
        taken = 0
        for group, paths in groups.items():
            unique = []
            for p in paths:
                digest = _sha256_file(tree / p)
                if digest in seen:
                    _count(skips, "duplicate of an earlier file")
                    continue
                seen[digest] = p
                unique.append(p)
            accepted = 0
            order = selection_order(unique) if src.cap is not None else unique
            for p in order:
                if src.cap is not None and accepted >= src.cap:
                    _count(skips, "over the cap")
                    continue
                audio, why = load_clip(tree / p, sample_rate)
                if audio is None:
                    _count(skips, why)
                    continue
                clips.append(Clip(src, p, group, audio))
                accepted += 1
            taken += accepted
        print(f"  {src.id}: {taken} files from {src.package} {PACKAGES[src.package].version}", flush=True)
    return clips


def build_outputs(clips: Sequence[Clip], split: Mapping[str, str], sample_rate: int,
                  skips: dict[str, int] | None = None) -> list[Output]:
    gap = round(SPEECH_GAP_S * sample_rate)
    outputs: list[Output] = []
    by_key: dict[tuple[str, str, str], list[Clip]] = {}
    for c in clips:
        by_key.setdefault((c.source.id, c.group, split[f"{c.source.package}/{c.path}"]), []).append(c)
    order = {s.id: i for i, s in enumerate(SOURCES)}
    for (sid, group, sp), members in sorted(by_key.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        members = sorted(members, key=lambda c: c.path)
        src = members[0].source
        if src.category == "speech":
            packs = pack_clips([len(c.audio) for c in members], round(SPEECH_MAX_S * sample_rate), gap,
                               round(SPEECH_MIN_S * sample_rate))
            min_len = round(SPEECH_MIN_S * sample_rate)
            for i, idx in enumerate(packs):
                audio = concat_with_gaps([members[j].audio for j in idx], gap)
                if len(audio) < min_len:  # too little of this speaker in this split for a metric
                    if skips is not None:
                        _count(skips, f"in a speech file under {SPEECH_MIN_S:g} s (dropped)", len(idx))
                    continue
                outputs.append(Output(sp, src.category, src, f"{safe_name(group)}-{i:03d}",
                                      tuple(members[j].path for j in idx), audio))
        else:
            for c in members:
                stem = c.path[len(src.root) + 1:].rsplit(".", 1)[0].replace("/", "_")
                bounds = excerpt_bounds(len(c.audio), round(MUSIC_EXCERPT_S * sample_rate),
                                        round(MUSIC_MIN_EXCERPT_S * sample_rate), MUSIC_MAX_EXCERPTS_PER_TRACK)
                for k, (a, b) in enumerate(bounds):
                    piece = c.audio[a:b]
                    if np.max(np.abs(piece)) < SILENCE_PEAK:
                        if skips is not None:
                            _count(skips, "silent music excerpts (not files)")
                        continue
                    outputs.append(Output(sp, src.category, src, f"{safe_name(stem)}-{k:02d}", (c.path,), piece))
    names = [o.relpath for o in outputs]
    if len(set(names)) != len(names):
        raise CorpusError("two outputs got the same file name (a source table change?)")
    return outputs


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda t: t.write_text(text, encoding="utf-8", newline="\n"))


def write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    pcm = to_pcm16(audio)
    _atomic_write(path, lambda t: sf.write(str(t), pcm, sample_rate, format="FLAC", subtype="PCM_16"))


def readme_text(out_arg: str, sample_rate: int, fraction: float, rows: Sequence[Mapping[str, str]],
                licenses: Mapping[str, str], used: Mapping[str, int], skips: Mapping[str, int]) -> str:
    lines = [
        "Real-audio codec corpus: speech and music, train and validation",
        "===============================================================",
        "",
        "Real recordings only (no synthesis), taken from pinned Debian packages, mixed to mono,",
        f"resampled to {sample_rate} Hz with soxr and stored as 16-bit FLAC.",
        "",
        "Rebuild (deterministic: the same command gives byte-identical files):",
        f"    python scripts/make_corpus.py {out_arg} --sample-rate {sample_rate} "
        f"--validation-fraction {fraction}",
        "",
        "Split by source file: a file is validation when sha256('package/path') maps below the",
        "validation fraction; each (category, package) has files on both sides.",
        "Speech: clips of one speaker (source folder) and split, concatenated in sorted order with",
        f"{SPEECH_GAP_S} s of silence between them, at most {SPEECH_MAX_S:g} s per file.",
        f"Music: consecutive excerpts of at most {MUSIC_EXCERPT_S:g} s (excerpt k starts at "
        f"k*{MUSIC_EXCERPT_S:g} s), at most {MUSIC_MAX_EXCERPTS_PER_TRACK} per track.",
        "manifest.csv lists every file with the paths inside the package it came from.",
        "",
        "Totals",
        "------",
        f"{'split':<12}{'category':<10}{'files':>7}{'minutes':>10}",
    ]
    for (sp, cat), (n, s) in totals(rows).items():
        lines.append(f"{sp:<12}{cat:<10}{n:>7}{s / 60:>10.2f}")
    lines += ["", "Sources and licenses", "--------------------"]
    for src in SOURCES:
        pkg = PACKAGES[src.package]
        lines.append(f"{src.id}: {src.category}, {used.get(src.id, 0)} source files from "
                     f"{pkg.name} {pkg.version}, {src.root}/ - license {licenses[src.id]}")
    lines += ["", "Licenses as given by usr/share/doc/<package>/copyright in each package; see there",
              "for the copyright holders and the license texts.", "", "Source files left out", "---------------------"]
    for why, n in sorted(skips.items()):
        lines.append(f"{n:>5}  {why}")
    return "\n".join(lines) + "\n"


def remove_stale(out: Path, new_paths: set[str]) -> int:
    """Delete the files the previous manifest listed and the new one does not, and our temps."""
    removed = 0
    old = out / "manifest.csv"
    if old.is_file():
        try:
            with open(old, newline="", encoding="utf-8") as f:
                old_paths = [r.get("path") or "" for r in csv.DictReader(f)]
        except (OSError, csv.Error, UnicodeDecodeError):
            old_paths = []
        for p in old_paths:
            parts = Path(p).parts
            if (p in new_paths or len(parts) != 3 or parts[0] not in SPLITS or ".." in parts
                    or not p.endswith(".flac")):
                continue
            if (out / p).is_file():
                (out / p).unlink()
                removed += 1
    for d in [out] + [out / s / c for s in SPLITS for c in ("speech", "music")]:
        if d.is_dir():
            for e in d.iterdir():
                if _is_our_temp(e.name) and e.is_file():
                    e.unlink()
    return removed


def build(out_arg: str, cache_arg: str | None, sample_rate: int, fraction: float, force: bool) -> None:
    t0 = time.monotonic()
    out = Path(out_arg)
    cache = Path(cache_arg) if cache_arg else out / ".debs"
    if not 0.0 < fraction < 1.0:
        raise CorpusError(f"--validation-fraction must be between 0 and 1 (exclusive), got {fraction}")
    if not 8000 <= sample_rate <= 192000:
        raise CorpusError(f"--sample-rate must be in 8000..192000, got {sample_rate}")
    if cache.exists() and not cache.is_dir():
        raise CorpusError(f"cache {cache} exists and is not a directory")
    if shutil.which("dpkg-deb") is None:
        raise CorpusError("dpkg-deb not found (install dpkg), needed to extract the packages")
    expected = fingerprint(sample_rate, fraction)
    ignore = []
    if out.is_dir():
        try:
            rel = cache.resolve().relative_to(out.resolve())
        except ValueError:
            rel = None
        if rel is not None and not rel.parts:
            raise CorpusError(f"--cache {cache} is the output folder itself; give it a folder of its own "
                              f"(default: OUT/.debs)")
        if rel is not None:
            ignore.append(rel.parts[0])
    check_out_dir(out, expected, force, ignore)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, json.dumps(expected, indent=2, sort_keys=True) + "\n")

    print(f"fetching {len(PACKAGES)} packages into {cache}", flush=True)
    debs = {name: fetch_deb(cache, pkg) for name, pkg in PACKAGES.items()}
    skips: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=cache) as tmp:
        trees = {}
        for name, deb in debs.items():
            trees[name] = Path(tmp) / name
            extract_deb(deb, trees[name])
        print(f"decoding, mixing to mono, resampling to {sample_rate} Hz", flush=True)
        clips = collect(trees, sample_rate, skips)
        licenses = {}
        for src in SOURCES:
            paths = [c.path for c in clips if c.source is src]
            if not paths:
                raise CorpusError(f"source {src.id} gave no usable files")
            licenses[src.id] = source_license(src, PACKAGES[src.package], trees[src.package], paths)

    groups: dict[tuple[str, ...], list[str]] = {}
    for c in clips:
        groups.setdefault((c.source.category, c.source.package), []).append(f"{c.source.package}/{c.path}")
    split = assign_splits(groups, fraction)
    outputs = build_outputs(clips, split, sample_rate, skips)
    used: dict[str, int] = {}
    for sid, path in sorted({(o.source.id, p) for o in outputs for p in o.source_paths}):
        used[sid] = used.get(sid, 0) + 1

    rows = []
    for o in outputs:
        pkg = PACKAGES[o.source.package]
        rows.append(manifest_row(o.relpath, o.split, o.category, pkg.name, pkg.version, o.source_paths,
                                 licenses[o.source.id], len(o.audio), sample_rate))
    removed = remove_stale(out, {r["path"] for r in rows})
    print(f"writing {len(outputs)} files into {out}" + (f" (removed {removed} stale)" if removed else ""),
          flush=True)
    for o in outputs:
        write_flac(out / o.relpath, o.audio, sample_rate)
    write_text(out / "manifest.csv", format_manifest(rows))
    write_text(out / "README.txt", readme_text(out_arg, sample_rate, fraction, rows, licenses, used, skips))

    print(f"\ncorpus in {out} ({time.monotonic() - t0:.0f} s)")
    print(f"{'split':<12}{'category':<10}{'files':>7}{'minutes':>10}")
    for (sp, cat), (n, s) in totals(rows).items():
        print(f"{sp:<12}{cat:<10}{n:>7}{s / 60:>10.2f}")
    print("source files left out: " + ", ".join(f"{n} {why}" for why, n in sorted(skips.items())))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Build a real-audio speech+music train/validation corpus from pinned Debian packages.")
    ap.add_argument("out", metavar="OUT", help="output folder")
    ap.add_argument("--cache", metavar="DIR", help="where the .deb files are kept (default OUT/.debs)")
    ap.add_argument("--sample-rate", type=int, default=24000, help="output sample rate in Hz (default 24000)")
    ap.add_argument("--validation-fraction", type=float, default=0.2,
                    help="share of source files that go to validation (default 0.2)")
    ap.add_argument("--force", action="store_true", help="write into an OUT that holds something else")
    args = ap.parse_args(argv)
    try:
        build(args.out, args.cache, args.sample_rate, args.validation_fraction, args.force)
    except CorpusError as e:
        print(f"make_corpus: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make_corpus: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"make_corpus: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
