"""Faces people shoot sideways or tilted (retries on turned copies), and dlib's CNN detector.

All on skimage's public-domain astronaut, turned and shrunk so each detector call stays cheap.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")
from skimage import data as skimage_data  # noqa: E402

from mmfs.errors import NoFaceError  # noqa: E402
from mmfs.faces import FaceSearch, align_face, build_detector, detect_and_align, paste_back  # noqa: E402
from mmfs.faces.align import apply_affine  # noqa: E402
from mmfs.faces.detect import DlibCnnDetector  # noqa: E402
from mmfs.faces.search import face_roll, rotation_matrix, turned_copy  # noqa: E402


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def search() -> FaceSearch:
    return build_detector("dlib")


@pytest.fixture(scope="module")
def upright(search, astronaut):
    (face,) = search.detect(astronaut)
    return face


@pytest.mark.parametrize("angle", [90.0, 180.0, 270.0, 30.0, -45.0])
def test_rotation_matrix_turns_counter_clockwise_and_quarter_turns_match_rot90(angle):
    w, h = 40, 30
    matrix, out_w, out_h = rotation_matrix(w, h, angle)
    # the photo's centre goes to the copy's centre, and a point right of it moves up for a positive angle
    centre = np.array([[(w - 1) / 2, (h - 1) / 2]])
    np.testing.assert_allclose(apply_affine(matrix, centre), [[(out_w - 1) / 2, (out_h - 1) / 2]], atol=1e-9)
    step = apply_affine(matrix, centre + [[1.0, 0.0]]) - apply_affine(matrix, centre)
    a = np.radians(angle)
    np.testing.assert_allclose(step, [[np.cos(a), -np.sin(a)]], atol=1e-9)
    if angle % 90 == 0:
        image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        copy, m = turned_copy(image, angle)
        np.testing.assert_array_equal(copy, np.rot90(image, k=int(angle // 90)))
        # every pixel centre lands on the pixel that holds its value
        ys, xs = np.mgrid[0:h, 0:w]
        q = np.rint(apply_affine(m, np.stack([xs.ravel(), ys.ravel()], 1))).astype(int)
        np.testing.assert_array_equal(copy[q[:, 1], q[:, 0]], image[ys.ravel(), xs.ravel()])


def test_upright_face_costs_one_detector_call(search, astronaut, upright):
    search.calls = 0
    (again,) = search.detect(astronaut)
    assert search.calls == 1 and again.rotation == 0.0
    np.testing.assert_array_equal(again.landmarks, upright.landmarks)


@pytest.mark.parametrize("quarter", [1, 2, 3])
def test_sideways_and_upside_down_photos_are_found_and_mapped_back_exactly(search, astronaut, upright, quarter):
    # A photo that lost its EXIF orientation: stored turned clockwise by quarter * 90 degrees.
    photo = np.ascontiguousarray(np.rot90(astronaut, k=-quarter))
    assert build_detector("dlib", rotate=False).detect(photo) == []  # the plain detector misses it
    search.calls = 0
    (face,) = search.detect(photo)
    assert face.rotation == 90.0 * quarter and search.calls == 1 + quarter
    to_photo, _, _ = rotation_matrix(512, 512, -90.0 * quarter)
    np.testing.assert_allclose(face.landmarks, apply_affine(to_photo, upright.landmarks), atol=1e-6)
    # the box is the bounds of the turned detector box, in the photo
    assert face.box[0] <= face.landmarks[:, 0].min() and face.box[2] >= face.landmarks[:, 0].max()
    assert face.box[1] <= face.landmarks[:, 1].min() and face.box[3] >= face.landmarks[:, 1].max()


@pytest.mark.parametrize("tilt", [50.0, -50.0, 30.0])
def test_tilted_head_is_found_with_landmarks_on_the_eyes(search, astronaut, upright, tilt):
    photo, to_photo = turned_copy(astronaut, tilt)
    truth = apply_affine(to_photo, upright.landmarks)
    if abs(tilt) >= 45:
        assert build_detector("dlib", rotate=False).detect(photo) == []
    (face,) = search.detect(photo)
    # levelled: the landmarks are as good as on the upright photo (eye distance ~44 px)
    assert np.abs(face.landmarks - truth).max() < 2.5
    assert abs(face_roll(face.landmarks) - face_roll(truth)) < 3.0
    assert abs(((face.rotation + tilt) + 180) % 360 - 180 - face_roll(upright.landmarks)) < 10.0


def test_alignment_and_paste_back_of_a_turned_photo_work_unchanged(search, astronaut, upright):
    photo = np.ascontiguousarray(np.rot90(astronaut, k=1))
    (aligned,) = detect_and_align(photo, search, 128)
    reference = align_face(astronaut, upright, 128)
    # the same crop as from the upright photo: alignment follows the landmarks, whatever their angle
    assert np.abs(aligned.image.astype(int) - reference.image.astype(int)).mean() < 1.0
    black = np.zeros_like(aligned.image)
    pasted = paste_back(photo, black, aligned, feather=0.0)
    eyes = np.rint(aligned.face.landmarks[:2]).astype(int)
    assert (pasted[eyes[:, 1], eyes[:, 0]] == 0).all()  # the pasted crop covers the eyes, in the turned photo
    assert (pasted[:20, :20] == photo[:20, :20]).all()


def test_a_photo_without_a_face_tries_every_angle_then_reports_no_face(search, astronaut):
    wall = np.ascontiguousarray(astronaut[380:, 300:])  # a corner with no face
    search.calls = 0
    assert search.detect(wall) == []
    assert search.calls == 6
    with pytest.raises(NoFaceError, match="no face found"):
        detect_and_align(wall, search, 64)


def test_dlib_cnn_finds_the_face_and_its_landmarks_agree_with_hog(astronaut, upright):
    head = np.ascontiguousarray(astronaut[20:260, 110:350])  # 240 px around the face (~90 px)
    cnn = DlibCnnDetector(side=240)  # a small scan keeps the test to about a second
    (face,) = cnn.detect(head)
    assert face.score > 0.5
    np.testing.assert_allclose(face.landmarks, upright.landmarks - [110, 20], atol=2.0)
    box = face.box
    assert box[0] < face.landmarks[:, 0].min() < face.landmarks[:, 0].max() < box[2]
    assert cnn.detect(np.ascontiguousarray(astronaut[300:, 250:])) == []


def test_dlib_then_cnn_uses_the_cnn_only_when_hog_finds_nothing(astronaut, upright, monkeypatch):
    chain = build_detector("dlib+cnn")
    assert [type(d).__name__ for d, _ in chain.attempts] == ["DlibDetector"] * 6 + ["DlibCnnDetector"]
    assert [a for _, a in chain.attempts] == [0.0, 90.0, 180.0, 270.0, 45.0, -45.0, 0.0]
    monkeypatch.setattr(chain.attempts[-1][0], "side", 240)
    head = np.ascontiguousarray(astronaut[20:260, 110:350])
    chain.calls = 0
    (face,) = chain.detect(head)
    assert chain.calls == 1  # HOG found it: the CNN never ran
    # blurred so that HOG sees no face at any angle, the CNN (7th call) still does
    from PIL import ImageFilter

    blurred = np.asarray(Image.fromarray(head).filter(ImageFilter.GaussianBlur(4)))
    assert build_detector("dlib").detect(blurred) == []
    chain.calls = 0
    (face,) = chain.detect(blurred)
    assert chain.calls == 7 and face.rotation == 0.0
    np.testing.assert_allclose(face.landmarks, upright.landmarks - [110, 20], atol=4.0)


# ---- small faces in large photos, and faces of every lean in one photo ------------------------------------

ASTRONAUT_BOX = 88.0  # the upright astronaut's HOG box, px


def backdrop(width: int, height: int) -> np.ndarray:
    """A face-less photo of the given size: skimage's coffee cup, enlarged."""
    return np.asarray(Image.fromarray(skimage_data.coffee()).resize((width, height), Image.BICUBIC)).copy()


def paste_astronaut(canvas: np.ndarray, upright_landmarks: np.ndarray, px: float, x: int, y: int) -> np.ndarray:
    """The astronaut scaled so her face box is `px` wide, top-left corner at (x, y); her landmarks there."""
    side = round(512 * px / ASTRONAUT_BOX)
    small = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((side, side), Image.LANCZOS))
    canvas[y : y + side, x : x + side] = small
    s = side / 512
    return (upright_landmarks + 0.5) * s - 0.5 + [x, y]


def test_tile_grid_covers_the_photo_with_the_overlap_asked_for():
    from mmfs.faces.tiles import tile_grid

    for w, h, side, overlap in ((6000, 4000, 4096, 281), (2400, 1600, 1024, 160), (900, 700, 1024, 100)):
        tiles = tile_grid(w, h, side, overlap)
        for x0, y0, x1, y1 in tiles:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 <= side and y1 - y0 <= side
        # a grid: every column span with every row span; each axis covered end to end, neighbours sharing >= overlap
        cols, rows = sorted({(t[0], t[2]) for t in tiles}), sorted({(t[1], t[3]) for t in tiles})
        assert len(tiles) == len(cols) * len(rows)
        for spans, length in ((cols, w), (rows, h)):
            assert spans[0][0] == 0 and spans[-1][1] == length
            assert all(a[1] - b[0] >= overlap for a, b in zip(spans, spans[1:], strict=False))
    assert len(tile_grid(6000, 4000, 4096, 281)) == 2


def test_merge_boxes_keeps_the_best_of_each_overlapping_group():
    from mmfs.faces.tiles import merge_boxes

    boxes = [np.array(b, float) for b in ([0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 0, 12, 10])]
    kept, scores = merge_boxes(boxes, [1.0, 1.5, 0.7, 0.2])
    assert [list(b) for b in kept] == [[1, 1, 11, 11], [50, 50, 60, 60]] and scores == [1.5, 0.7]


@pytest.fixture(scope="module")
def large_photo(upright):
    """A 2500 x 1600 photo with two 64 px faces: the shrunk scan (to 2048 px) makes them 52 px."""
    canvas = backdrop(2500, 1600)
    truths = [
        paste_astronaut(canvas, upright.landmarks, 64, 300, 900),
        paste_astronaut(canvas, upright.landmarks, 64, 1700, 200),
    ]
    return canvas, truths


def test_small_faces_in_a_large_photo_are_found_by_the_full_resolution_scan(large_photo):
    photo, truths = large_photo
    assert build_detector("dlib", rotate=False, min_face=None).detect(photo) == []  # the shrunk scan alone
    search = build_detector("dlib")
    search.calls = 0
    faces = search.detect(photo)
    assert search.calls == 1 and len(faces) == 2
    for face, truth in zip(faces, truths, strict=True):
        # landmarks placed on the full-resolution photo: as close as on the ~70 px face they can be
        assert np.abs(face.landmarks - truth).max() < 3.0
        assert 55 < face.box[2] - face.box[0] < 90


def test_a_face_across_a_tile_seam_is_found_once(upright, monkeypatch):
    import mmfs.faces.detect as detect
    from mmfs.faces.tiles import tile_grid

    monkeypatch.setattr(detect, "DLIB_TILE_SIDE", 1024)
    canvas = backdrop(2400, 1600)
    detector = detect.DlibDetector()
    scale = 2048 / 2400
    overlap = int(np.ceil(1.5 * detect.DLIB_SMALLEST_BOX / scale))
    tiles = tile_grid(2400, 1600, 1024, overlap)
    assert len(tiles) > 4
    seam = tiles[1][0] + overlap // 2  # the middle of the first vertical overlap
    side = round(512 * 70 / ASTRONAUT_BOX)
    truth = paste_astronaut(canvas, upright.landmarks, 70, seam - side // 2, 100)
    faces = detector.detect(canvas)
    assert len(faces) == 1 and np.abs(faces[0].landmarks - truth).max() < 3.0


def paste_turned_head(canvas: np.ndarray, upright_landmarks: np.ndarray, angle: float, x: int, y: int) -> np.ndarray:
    """The astronaut's head (260 px square) turned `angle` degrees, pasted without its black corners."""
    head = np.ascontiguousarray(skimage_data.astronaut()[10:270, 100:360])
    copy, matrix = turned_copy(head, angle)
    inside, _ = turned_copy(np.full_like(head, 255), angle)
    region = canvas[y : y + copy.shape[0], x : x + copy.shape[1]]
    region[:] = np.where(inside > 127, copy, region)
    return apply_affine(matrix, upright_landmarks - [100, 10]) + [x, y]


def test_every_angle_finds_a_tilted_face_beside_an_upright_one(upright):
    canvas = backdrop(900, 500)
    truths = [
        paste_turned_head(canvas, upright.landmarks, 0.0, 40, 120),
        paste_turned_head(canvas, upright.landmarks, 50.0, 420, 60),
    ]
    (only,) = build_detector("dlib").detect(canvas)  # the default stops at the upright face
    assert np.abs(only.landmarks - truths[0]).max() < 3.0
    search = build_detector("dlib", every_angle=True)
    search.calls = 0
    faces = search.detect(canvas)
    assert len(faces) == 2 and search.calls >= 6
    for face, truth in zip(faces, truths, strict=True):
        assert np.abs(face.landmarks - truth).max() < 3.0
    assert faces[0].rotation == 0.0 and abs(abs(faces[1].rotation) - 50) < 10


def test_every_angle_needs_the_turned_copies():
    from mmfs.config.faces import FaceDetection
    from mmfs.errors import OptionError

    with pytest.raises(OptionError, match="cannot be used with --no-rotate"):
        FaceDetection(every_angle=True, rotate=False)
