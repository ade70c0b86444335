"""Face detection, FFHQ alignment and paste-back on real photos (skimage's public-domain astronaut)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mmfs.errors import MissingWeightsError, MMFSError, NoFaceError
from mmfs.faces import Face, align_face, build_detector, detect_and_align, ffhq_quad, paste_back
from mmfs.faces.align import apply_affine, invert_affine, quad_to_matrix

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="session")
def dlib_detector():
    pytest.importorskip("dlib")
    return build_detector("dlib")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _upright_face(cx: float, cy: float, eye_half: float, mouth_drop: float, mouth_half: float) -> np.ndarray:
    return np.array(
        [
            [cx - eye_half, cy],
            [cx + eye_half, cy],
            [cx, cy + mouth_drop * 0.6],
            [cx - mouth_half, cy + mouth_drop],
            [cx + mouth_half, cy + mouth_drop],
        ]
    )


def _rotate(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points - centre) @ rot.T + centre


def _crop_coords(quad: np.ndarray, size: int, points: np.ndarray) -> np.ndarray:
    """Where the FFHQ recipe puts image points in the crop: their fractions along the quad's sides."""
    u, v = quad[3] - quad[0], quad[1] - quad[0]
    rel = points - quad[0]
    frac = np.stack([rel @ u / (u @ u), rel @ v / (v @ v)], axis=1)
    return frac * size - 0.5  # pixel-edge fractions -> pixel-centre coordinates


# -- the FFHQ recipe and the matrix ------------------------------------------------------------------


@pytest.mark.parametrize("eye_half, mouth_drop", [(30.0, 40.0), (15.0, 60.0)])
def test_ffhq_quad_upright_face_by_hand(eye_half, mouth_drop):
    quad = ffhq_quad(_upright_face(200.0, 150.0, eye_half, mouth_drop, 20.0))
    # Upright: x along the eye line, half side = max(2 * eye distance, 1.8 * eye-mouth distance).
    half = max(2.0 * 2 * eye_half, 1.8 * mouth_drop)
    cx, cy = 200.0, 150.0 + 0.1 * mouth_drop
    expected = [[cx - half, cy - half], [cx - half, cy + half], [cx + half, cy + half], [cx + half, cy - half]]
    np.testing.assert_allclose(quad, expected, atol=1e-9)


def test_ffhq_quad_rotates_with_the_face():
    lm = _upright_face(100.0, 80.0, 25.0, 45.0, 18.0)
    centre = np.array([37.0, 11.0])
    angle = 0.4
    np.testing.assert_allclose(ffhq_quad(_rotate(lm, angle, centre)), _rotate(ffhq_quad(lm), angle, centre), atol=1e-9)


def test_matrix_sends_quad_to_crop_corners_and_eyes_to_ffhq_fractions():
    size = 256
    lm = _rotate(_upright_face(300.0, 200.0, 30.0, 40.0, 22.0), -0.3, np.array([300.0, 200.0]))
    quad = ffhq_quad(lm)
    matrix = quad_to_matrix(quad, size)
    edge = [[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]]
    np.testing.assert_allclose(apply_affine(matrix, quad), edge, atol=1e-9)
    # An upright-symmetric face scaled by its eyes lands its eyes at 3/8 and 5/8 of the width.
    eyes = apply_affine(matrix, lm[:2])
    np.testing.assert_allclose(eyes[:, 0], [size * 3 / 8 - 0.5, size * 5 / 8 - 0.5], atol=1e-9)
    np.testing.assert_allclose(eyes[:, 1], eyes[0, 1], atol=1e-9)  # the eye line is horizontal


@pytest.mark.parametrize("quad_side_px", [90.0, 1100.0])  # upsampling, and the box-reduce path
def test_warp_puts_image_content_exactly_where_the_matrix_says(quad_side_px):
    size = 128
    lm = _rotate(_upright_face(0.0, 0.0, quad_side_px / 8, quad_side_px / 12, 10.0), 0.25, np.zeros(2))
    offset = np.array([700.0, 650.0])
    lm += offset
    spot = offset + np.array([0.17, -0.31]) * quad_side_px / 2  # a bright blob somewhere inside the crop
    h, w = 1400, 1400
    yy, xx = np.mgrid[:h, :w]
    sigma = quad_side_px / 40
    blob = np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * sigma**2))
    image = np.repeat((blob * 250).round().astype(np.uint8)[..., None], 3, axis=2)
    aligned = align_face(image, Face(box=np.zeros(4), landmarks=lm, score=1.0), size)
    crop = aligned.image[..., 0].astype(np.float64)
    crop = np.where(crop > 0.2 * crop.max(), crop, 0.0)
    cy, cx = np.mgrid[:size, :size]
    centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, apply_affine(aligned.matrix, spot[None])[0], atol=0.1)


# -- dlib on real photos ---------------------------------------------------------------------------


def test_dlib_finds_the_astronaut_and_aligns_her_eyes(dlib_detector, astronaut):
    faces = dlib_detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    lm = face.landmarks
    assert lm.shape == (5, 2) and face.box.shape == (4,) and face.score > 0.3
    x0, y0, x1, y1 = face.box
    assert np.all((lm[:, 0] > x0 - 5) & (lm[:, 0] < x1 + 5) & (lm[:, 1] > y0 - 5) & (lm[:, 1] < y1 + 5))
    assert lm[0, 0] < lm[2, 0] < lm[1, 0]  # image-left eye, nose, image-right eye
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth
    assert lm[3, 0] < lm[4, 0]

    size = 256
    (aligned,) = detect_and_align(astronaut, dlib_detector, size)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    assert aligned.matrix.shape == (2, 3) and aligned.size == size
    expected = _crop_coords(ffhq_quad(aligned.face.landmarks), size, aligned.face.landmarks)
    np.testing.assert_allclose(apply_affine(aligned.matrix, aligned.face.landmarks), expected, atol=1e-6)
    # Her face is upright and eye-dominated: FFHQ puts the eyes at 3/8 and 5/8 of the crop's width.
    np.testing.assert_allclose(expected[:2, 0], [size * 3 / 8 - 0.5, size * 5 / 8 - 0.5], atol=2.0)
    # ...and the eye line a little above the middle (FFHQ's mean eye line is at about 0.48 of the side).
    np.testing.assert_allclose(expected[:2, 1], [size * 0.48 - 0.5] * 2, atol=3.0)
    # The pixels moved with the matrix: detecting again on the crop finds the eyes where it says.
    (again,) = dlib_detector.detect(aligned.image)
    np.testing.assert_allclose(again.landmarks[:2], expected[:2], atol=3.0)


def test_two_faces_side_by_side_are_both_found_and_aligned(dlib_detector, astronaut):
    second = np.asarray(Image.fromarray(astronaut[:, ::-1]).resize((420, 420), Image.LANCZOS))
    canvas = np.full((520, 1000, 3), 120, dtype=np.uint8)
    canvas[:512, :512] = astronaut
    canvas[60:480, 560:980] = second
    aligned = detect_and_align(canvas, dlib_detector, 128)
    assert len(aligned) == 2
    left, right = (a.face for a in aligned)
    assert left.box[0] < right.box[0]
    np.testing.assert_allclose(left.landmarks[:2], dlib_detector.detect(astronaut)[0].landmarks[:2], atol=0.5)
    # The right face is the same face mirrored and scaled by 420/512: its eyes swap sides.
    s = 420 / 512
    mirrored = np.stack(
        [560 + (511 - left.landmarks[:, 0] + 0.5) * s - 0.5, 60 + (left.landmarks[:, 1] + 0.5) * s - 0.5], 1
    )
    np.testing.assert_allclose(right.landmarks[[1, 0]], mirrored[:2], atol=4.0)
    for a in aligned:
        (crop_face,) = dlib_detector.detect(a.image)
        np.testing.assert_allclose(crop_face.landmarks[:2], apply_affine(a.matrix, a.face.landmarks[:2]), atol=3.0)


def test_large_photo_is_detected_at_full_resolution(dlib_detector, astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((2560, 2560), Image.BICUBIC))  # > the 2048 px scan size
    (small_face,) = dlib_detector.detect(astronaut)
    (big_face,) = dlib_detector.detect(big)
    np.testing.assert_allclose(big_face.landmarks[:2], (small_face.landmarks[:2] + 0.5) * 5 - 0.5, atol=6.0)
    a_small, a_big = align_face(astronaut, small_face, 128), align_face(big, big_face, 128)
    assert np.abs(a_small.image.astype(int) - a_big.image.astype(int)).mean() < 8.0


@pytest.mark.parametrize("which", ["coffee", "flat"])
def test_no_face_raises(dlib_detector, which):
    image = skimage_data.coffee() if which == "coffee" else np.full((300, 400, 3), 200, dtype=np.uint8)
    assert dlib_detector.detect(image) == []
    with pytest.raises(NoFaceError, match="^no face found$"):
        detect_and_align(image, dlib_detector, 256)


# -- paste-back ------------------------------------------------------------------------------------


def _quad_mask(quad: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
    from skimage.draw import polygon

    centre = quad.mean(0)
    q = (quad - centre) * scale + centre
    rr, cc = polygon(q[:, 1], q[:, 0], shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rr, cc] = True
    return mask


@pytest.mark.parametrize("stylized_size", [256, 512, 128])
def test_paste_back_of_the_unchanged_crop_restores_the_photo(dlib_detector, astronaut, stylized_size):
    (aligned,) = detect_and_align(astronaut, dlib_detector, 256)
    stylized = aligned.image
    if stylized_size != 256:
        stylized = np.asarray(Image.fromarray(stylized).resize((stylized_size, stylized_size), Image.LANCZOS))
    pasted = paste_back(astronaut, stylized, aligned)
    assert pasted.dtype == np.uint8 and pasted.shape == astronaut.shape and pasted is not astronaut
    diff = np.abs(pasted.astype(int) - astronaut.astype(int)).max(axis=2)
    side = np.linalg.norm(aligned.quad[3] - aligned.quad[0])
    outside = ~_quad_mask(aligned.quad, astronaut.shape[:2], 1 + 6 / side)  # the quad grown by 3 px a side
    assert diff[outside].max() == 0
    inner = _quad_mask(aligned.quad, astronaut.shape[:2], 0.7)
    # Two resamplings blur a little; a 128 px crop also holds less detail than her ~175 px face.
    limit = 6.0 if stylized_size < 256 else 3.0
    assert diff[inner].mean() < limit and np.percentile(diff[inner], 99) < 8 * limit
    assert diff.sum() > 0


@pytest.mark.parametrize("stylized_size", [64, 256])
def test_paste_back_puts_crop_content_where_the_inverse_matrix_says(stylized_size):
    lm = _rotate(_upright_face(150.0, 140.0, 20.0, 25.0, 12.0), 0.3, np.array([150.0, 140.0]))
    aligned = align_face(np.zeros((300, 320, 3), np.uint8), Face(np.zeros(4), lm, 1.0), 128)
    spot = np.array([0.41, 0.56]) * stylized_size - 0.5  # in the stylized crop's pixel coords
    yy, xx = np.mgrid[:stylized_size, :stylized_size]
    sigma = stylized_size / 30
    blob = np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * sigma**2))
    stylized = np.repeat((blob * 250).round().astype(np.uint8)[..., None], 3, axis=2)
    pasted = paste_back(np.zeros((300, 320, 3), np.uint8), stylized, aligned)[..., 0].astype(np.float64)
    pasted = np.where(pasted > 0.2 * pasted.max(), pasted, 0.0)
    py, px = np.mgrid[: pasted.shape[0], : pasted.shape[1]]
    centroid = np.array([(pasted * px).sum(), (pasted * py).sum()]) / pasted.sum()
    in_aligned = (spot + 0.5) * 128 / stylized_size - 0.5
    expected = apply_affine(invert_affine(aligned.matrix), in_aligned[None])[0]
    np.testing.assert_allclose(centroid, expected, atol=0.1)


def test_paste_back_blends_a_changed_crop_with_a_feathered_edge(dlib_detector, astronaut):
    (aligned,) = detect_and_align(astronaut, dlib_detector, 256)
    black = np.zeros((256, 256, 3), dtype=np.uint8)
    pasted = paste_back(astronaut, black, aligned, feather=0.1)
    core = _quad_mask(aligned.quad, astronaut.shape[:2], 0.75)  # ramps cover the outer 10% on each side
    assert pasted[core].max() == 0
    outside = ~_quad_mask(aligned.quad, astronaut.shape[:2], 1 + 6 / np.linalg.norm(aligned.quad[3] - aligned.quad[0]))
    np.testing.assert_array_equal(pasted[outside], astronaut[outside])
    # In the ramp the result lies strictly between the photo and the black crop.
    ring = _quad_mask(aligned.quad, astronaut.shape[:2], 0.97) & ~_quad_mask(aligned.quad, astronaut.shape[:2], 0.83)
    bright = ring & (astronaut.min(axis=2) > 60)
    assert np.all(pasted[bright].astype(int).sum(1) < astronaut[bright].astype(int).sum(1))
    assert np.all(pasted[bright].max(axis=1) > 0)
    hard = paste_back(astronaut, black, aligned, feather=0.0)
    assert hard[ring].max() == 0


def test_paste_back_twice_for_two_faces(dlib_detector, astronaut):
    canvas = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    out = canvas
    aligned = detect_and_align(canvas, dlib_detector, 128)
    assert len(aligned) == 2
    for a in aligned:
        out = paste_back(out, np.zeros_like(a.image), a)
    for a in aligned:
        core = _quad_mask(a.quad, canvas.shape[:2], 0.6)
        assert out[core].max() == 0


# -- detector choice and errors --------------------------------------------------------------------


def test_insightface_missing_model_is_a_one_line_error(tmp_path):
    missing = tmp_path / "det_10g.onnx"
    with pytest.raises(MissingWeightsError) as err:
        build_detector("insightface", missing)
    message = str(err.value)
    assert "\n" not in message and str(missing) in message and "--detector-model" in message
    assert message.startswith(f"insightface detector model not found: {missing}; ")
    with pytest.raises(MissingWeightsError, match=r"not found \(no --detector-model given\); .*det_10g.onnx"):
        build_detector("insightface", None)


def test_insightface_rejects_a_file_that_is_not_a_model(tmp_path):
    pytest.importorskip("insightface")
    bogus = tmp_path / "det.onnx"
    bogus.write_bytes(b"not an onnx graph")
    with pytest.raises(MissingWeightsError, match="det.onnx: not a loadable ONNX model") as err:
        build_detector("insightface", bogus)
    assert "\n" not in str(err.value)


def test_dlib_missing_landmark_file_and_unknown_detector(tmp_path):
    pytest.importorskip("dlib")
    with pytest.raises(MissingWeightsError, match="landmark model not found"):
        build_detector("dlib", tmp_path / "nope.dat")
    with pytest.raises(
        MMFSError, match=r"unknown face detector .mtcnn.; choose one of: dlib, dlib-cnn, dlib\+cnn, insightface"
    ):
        build_detector("mtcnn")


def _export_fake_scrfd(path) -> None:
    """A SCRFD-shaped ONNX graph (9 outputs, strides 8/16/32, 2 anchors) that 'detects' red 8x8 cells.

    Each stride-8 cell's score is sigmoid(4 * (R - B - 1)) of its mean normalised RGB; boxes reach 4
    strides around the anchor and the five points sit at fixed offsets, so the true answer is known.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class FakeScrfd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("box", torch.tensor([[4.0, 4.0, 4.0, 4.0]]))
            self.register_buffer("kps", torch.tensor([[-1.5, -1.0, 1.5, -1.0, 0.0, 0.5, -1.0, 2.0, 1.0, 2.0]]))

        def forward(self, x):
            outs_score, outs_box, outs_kps = [], [], []
            for stride in (8, 16, 32):
                pooled = torch.nn.functional.avg_pool2d(x, stride)  # [1, 3, h, w]
                if stride == 8:
                    logit = 4.0 * (pooled[:, 0] - pooled[:, 2] - 1.0)
                else:
                    logit = pooled[:, 0] * 0.0 - 20.0
                score = torch.sigmoid(logit).reshape(-1, 1).repeat_interleave(2, dim=0)
                outs_score.append(score)
                outs_box.append(score * 0.0 + self.box)
                outs_kps.append(score * 0.0 + self.kps)
            return tuple(outs_score + outs_box + outs_kps)

    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]
    torch.onnx.export(
        FakeScrfd(),
        torch.zeros(1, 3, 64, 64),
        str(path),
        input_names=["input.1"],
        output_names=names,
        dynamic_axes={"input.1": {2: "h", 3: "w"}, **{n: {0: "n"} for n in names}},
        dynamo=False,
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, needed without onnxscript
def test_insightface_detector_converts_colours_boxes_points_and_order(tmp_path):
    pytest.importorskip("insightface")
    model = tmp_path / "fake_scrfd.onnx"
    _export_fake_scrfd(model)
    detector = build_detector("insightface", model)
    image = np.full((640, 640, 3), 128, dtype=np.uint8)
    image[320:328, 160:168] = (200, 0, 0)  # red in RGB: weaker
    image[320:328, 480:488] = (255, 0, 0)  # stronger, so insightface ranks it first
    image[100:108, 320:328] = (0, 0, 255)  # blue: seen only if RGB/BGR were mixed up
    faces = detector.detect(image)
    assert len(faces) == 2
    offsets = np.array([[-1.5, -1.0], [1.5, -1.0], [0.0, 0.5], [-1.0, 2.0], [1.0, 2.0]]) * 8
    for face, anchor in zip(faces, [(160, 320), (480, 320)], strict=True):  # left to right
        np.testing.assert_allclose(
            face.box, [anchor[0] - 32, anchor[1] - 32, anchor[0] + 32, anchor[1] + 32], atol=1e-3
        )
        np.testing.assert_allclose(face.landmarks, np.asarray(anchor) + offsets, atol=1e-3)
    r = lambda v: (v - 127.5) / 128.0  # noqa: E731
    expected = [1 / (1 + math.exp(-4 * (r(v) - r(0) - 1))) for v in (200, 255)]
    np.testing.assert_allclose([f.score for f in faces], expected, rtol=1e-4)
