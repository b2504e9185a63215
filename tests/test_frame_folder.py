"""One rule for a folder of frames, shared by training and the device."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from stpr.runtime.io.frame_folder import IMAGE_EXTS, frame_files
from stpr.runtime.io.stream import frames_from_folder
from stpr.train.data.videos import scan


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTS) + [".JPG"])
def test_each_extension_is_a_frame_on_both_sides_and_dot_files_never_are(tmp_path: Path, ext: str):
    folder = tmp_path / "clip"
    folder.mkdir()
    img = np.full((8, 8, 3), 128, np.uint8)
    for i in range(3):
        assert cv2.imwrite(str(folder / f"{i:06d}{ext.lower()}"), img)
        (folder / f"._{i:06d}{ext}").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # not an image
    (folder / "notes.txt").write_text("not a frame")
    files = frame_files(folder)
    assert [p.name for p in files] == [f"{i:06d}{ext.lower()}" for i in range(3)]
    assert scan(folder)[0] == 3  # training counts the same three
    assert len(list(frames_from_folder(folder))) == 3  # and the device decodes them, none of the dot-files
