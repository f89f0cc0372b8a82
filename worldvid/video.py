"""Videos for looking at what a world model imagines: nearest upscaling, labelled side-by-side panels, a visible
error map, and MP4 / GIF files written atomically.

Frames are uint8 [T, H, W, 3] throughout. MP4 goes through imageio-ffmpeg (H.264, yuv420p, so it plays
everywhere; lossy); GIF through Pillow (256-colour palette per frame, exact for flat-shaded scenes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from worldvid.atomic import remove_dead_temporaries, temporary_name

VIDEO_SUFFIXES = (".mp4", ".gif")
"""File types ``write_video`` knows, by suffix."""

MACRO_BLOCK = 16
"""MP4 frames are padded (black, right and bottom) to a multiple of this, so ffmpeg never rescales them."""

BACKGROUND = (24, 24, 24)
"""Colour of the label bands and the gaps between panels."""

TEXT = (235, 235, 235)


def _check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{name} must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
    return frames


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer ``factor``: uint8 [..., H, W, C] -> [..., H*f, W*f, C]."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive int, got {factor!r}")
    frames = np.asarray(frames)
    if frames.ndim < 3:
        raise ValueError(f"frames must be [..., H, W, C], got shape {frames.shape}")
    if factor == 1:
        return frames.copy()
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def error_panel(a: np.ndarray, b: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """A visible map of |a - b|: uint8 [..., H, W, 3] for frames a, b uint8 [..., H, W, 3].

    The per-pixel error is the largest channel difference, times ``gain`` (small errors of a few grey levels
    show), shown with a black-red-yellow-white heat scale: black is exact, white is an error >= 255 / gain.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"a and b must be uint8 [..., H, W, 3] of one shape, got {a.dtype} {a.shape} and {b.dtype} {b.shape}")
    if not gain > 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    error = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1).astype(np.float32)
    v = np.clip(error * (gain / 255.0), 0.0, 1.0)[..., None]
    heat = np.clip(3.0 * v - np.array([0.0, 1.0, 2.0], np.float32), 0.0, 1.0)  # red, then green, then blue
    return np.round(heat * 255.0).astype(np.uint8)


def _text_band(texts: Sequence[str], centres: Sequence[int], width: int, height: int, align_left: bool = False) -> np.ndarray:
    """uint8 [height, width, 3]: ``texts`` drawn with PIL's default font, centred on ``centres`` (or left-aligned)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for text, centre in zip(texts, centres):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = centre if align_left else centre - (right - left) // 2
        y = (height - (bottom - top)) // 2 - top
        draw.text((max(x, 0), y), text, fill=TEXT, font=font)
    return np.asarray(image)


def _band_height() -> int:
    from PIL import Image, ImageDraw, ImageFont

    _, top, _, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag|0", font=ImageFont.load_default())
    return int(bottom - top) + 6 + (int(bottom - top) % 2)  # even, so yuv420p chroma blocks stay aligned


def side_by_side(
    panels: Sequence[np.ndarray],
    labels: Sequence[str],
    steps: Sequence[int] | None = None,
    step_label: str = "step",
    gap: int = 4,
) -> np.ndarray:
    """Panels next to each other, a label above each and the step number below: uint8 [T, H', W', 3].

    panels: uint8 [T, H_i, W_i, 3] each (a panel with T = 1 is held for every step, e.g. a goal image); shorter
    panels are padded at the bottom. labels: one per panel. steps: the number shown under frame t (default t);
    the footer reads "{step_label} {steps[t]}". Upscale the panels first (``upscale``) for small frames.
    """
    if not panels or len(panels) != len(labels):
        raise ValueError(f"need one label per panel and at least one panel, got {len(panels)} panels, {len(labels)} labels")
    panels = [_check_frames(p, f"panel {i}") for i, p in enumerate(panels)]
    lengths = {p.shape[0] for p in panels} - {1}
    if len(lengths) > 1:
        raise ValueError(f"panels must have one length T (or 1), got {[p.shape[0] for p in panels]}")
    t_total = lengths.pop() if lengths else 1
    steps = list(range(t_total)) if steps is None else list(steps)
    if len(steps) != t_total:
        raise ValueError(f"need one step number per frame: {t_total} frames, {len(steps)} steps")
    gap = int(gap) + int(gap) % 2
    height = max(p.shape[1] for p in panels)
    width = sum(p.shape[2] for p in panels) + gap * (len(panels) + 1)
    band = _band_height()
    out = np.empty((t_total, band + height + band, width, 3), np.uint8)
    out[:] = BACKGROUND
    x, centres = gap, []
    for p in panels:
        out[:, band:band + p.shape[1], x:x + p.shape[2]] = p  # broadcasts a T = 1 panel
        centres.append(x + p.shape[2] // 2)
        x += p.shape[2] + gap
    out[:, :band] = _text_band(labels, centres, width, band)
    for t, step in enumerate(steps):
        out[t, band + height:] = _text_band([f"{step_label} {step}"], [gap], width, band, align_left=True)
    return out


def _pad_to_block(frames: np.ndarray, block: int = MACRO_BLOCK) -> np.ndarray:
    t, h, w, _ = frames.shape
    ph, pw = -h % block, -w % block
    if not ph and not pw:
        return frames
    return np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)))


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10, quality: float = 9) -> Path:
    """Write frames uint8 [T, H, W, 3] to ``path`` (.mp4 or .gif, by suffix), atomically; returns the path.

    MP4: H.264 via imageio-ffmpeg (``quality`` 1-10, imageio-ffmpeg's scale: 9 is CRF 5), yuv420p so that every
    player can show it (chroma at half resolution: upscale by an even factor to keep colours crisp), width and
    height padded with black to a multiple of 16. GIF: Pillow, looping, one palette per frame; note that GIF stores a
    run of identical consecutive frames once (with their summed duration), so reading it back yields fewer
    frames. The file is written under a temporary name in the same folder and renamed into place.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video path must end in one of {VIDEO_SUFFIXES}, got {path.name!r}")
    frames = _check_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(path.parent)  # what killed writers left
    tmp = temporary_name(path)
    try:
        if suffix == ".gif":
            import imageio.v3 as iio

            iio.imwrite(tmp, frames, plugin="pillow", extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            import imageio_ffmpeg

            frames = _pad_to_block(frames)
            height, width = frames.shape[1:3]
            writer = imageio_ffmpeg.write_frames(
                str(tmp), (width, height), fps=fps, codec="libx264", quality=quality,
                macro_block_size=MACRO_BLOCK, ffmpeg_log_level="error",
                # nearest-neighbour chroma subsampling: a flat 2x2 block (any even upscale) keeps its exact colour
                output_params=["-sws_flags", "neighbor+accurate_rnd+full_chroma_int", "-f", "mp4"],  # tmp: no .mp4
            )
            writer.send(None)
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
            writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """The frames of an MP4 or GIF file: uint8 [T, H, W, 3] (an MP4's frames include ``write_video``'s padding)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        import imageio.v3 as iio

        frames = iio.imread(path, plugin="pillow", index=None, mode="RGB")
        return np.asarray(frames, np.uint8).reshape(-1, *frames.shape[-3:])
    if suffix == ".mp4":
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
        if not frames:
            raise ValueError(f"{path} holds no frames")
        return np.stack(frames)
    raise ValueError(f"video path must end in one of {VIDEO_SUFFIXES}, got {path.name!r}")
