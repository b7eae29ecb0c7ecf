"""The one rule for which files under a folder are audio (fastcodec.audio_files)."""
from fastcodec.audio_files import audio_files


def test_audio_files_by_suffix_recursive_sorted(tmp_path):
    names = ["b.wav", "a.FLAC", "sub/c.ogg", "sub/deeper/d.mp3", "e.aif", "f.aiff", "g.oga",
             "notes.txt", "wav", "h.wav.bak", "sub/.hidden.flac"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "folder.wav").mkdir()  # a folder named like audio is not a file
    found = [p.relative_to(tmp_path).as_posix() for p in audio_files(tmp_path)]
    assert found == ["a.FLAC", "b.wav", "e.aif", "f.aiff", "g.oga", "sub/.hidden.flac", "sub/c.ogg",
                     "sub/deeper/d.mp3"]
    assert audio_files(tmp_path / "notes.txt") == [] and audio_files(tmp_path / "missing") == []
