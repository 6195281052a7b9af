"""Frames from a live source as they arrive: a pipe, a camera device, an RTSP/HTTP URL, or a file.

``vljepa stream -`` reads standard input, e.g. a clip replayed in real time::

    ffmpeg -re -i clip.mp4 -c copy -f mpegts - | vljepa stream -

One ffmpeg process decodes the source with the same filters as ``preprocessing.decode``'s file
path (``fps``, short-edge bilinear scale to ``size * 256 / 224``, centre crop to ``size``) and
writes raw RGB frames to a pipe; a reader thread takes each frame off the pipe the moment ffmpeg
writes it and stamps its arrival (``time.monotonic()``), so a consumer that falls behind sees its
backlog as lag instead of slowing the source down. Frame ``k`` has stream time ``k / fps``.

What a lag measured from the arrival stamps leaves out: ffmpeg's own input probing and buffering
before its first frame (``LIVE_INPUT_OPTIONS`` keep both small for live sources).
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from preprocessing.decode import scale_and_crop

# Start decoding after ~0.5 s of input instead of ffmpeg's default 5 s probe. Not ``-fflags nobuffer``:
# with it ffmpeg 5.1 gave no frame at all for an H.264 MPEG-TS pipe (libx264 zerolatency) here.
LIVE_INPUT_OPTIONS = {"flags": "low_delay", "probesize": "500000", "analyzeduration": "500000"}
_END = object()


class LiveSourceError(RuntimeError):
    """ffmpeg could not read the source (its last lines of stderr say why)."""


def is_live(source: str) -> bool:
    """Standard input, a device or a URL: read as it arrives (files are read whole by default)."""
    return source == "-" or source.startswith("/dev/") or "://" in source


def ffmpeg_command(source: str, *, fps: float, size: int, input_format: str | None = None) -> list[str]:
    """The ffmpeg argv that writes ``source``'s frames at ``fps`` as raw ``size``² RGB to stdout."""
    import ffmpeg

    options: dict[str, str] = dict(LIVE_INPUT_OPTIONS) if is_live(source) else {}
    if input_format:
        options["format"] = input_format  # e.g. v4l2 for a camera, or when a pipe's format is ambiguous
    stream = ffmpeg.input("pipe:0" if source == "-" else source, **options).filter("fps", fps=fps)
    stream = scale_and_crop(stream, size).output("pipe:1", format="rawvideo", pix_fmt="rgb24")
    args = ["-hide_banner", "-loglevel", "error"] + ([] if source == "-" else ["-nostdin"])
    return ffmpeg.compile(stream.global_args(*args), cmd="ffmpeg")


@dataclass
class LiveFrames:
    """Iterate ``(stream time s, uint8 (size, size, 3))`` as ffmpeg delivers them.

    ``last_arrival``: when the frame most recently handed out left ffmpeg (``time.monotonic()``);
    ``backlog``: frames received and not yet handed out. ``close()`` stops ffmpeg.
    """

    source: str
    fps: float
    size: int
    input_format: str | None = None
    last_arrival: float = 0.0
    first_arrival: float | None = None
    frames_read: int = 0
    _queue: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _stderr: list[bytes] = field(default_factory=list, repr=False)
    _stderr_thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> "LiveFrames":
        command = ffmpeg_command(self.source, fps=self.fps, size=self.size, input_format=self.input_format)
        self._process = subprocess.Popen(command, stdin=None if self.source == "-" else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        threading.Thread(target=self._read, name="live-frames", daemon=True).start()
        self._stderr_thread = threading.Thread(target=lambda: self._stderr.append(self._process.stderr.read()),
                                               daemon=True)
        self._stderr_thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        frame_bytes = self.size * self.size * 3
        pipe = self._process.stdout
        try:
            while True:
                chunk = bytearray()
                while len(chunk) < frame_bytes:
                    part = pipe.read(frame_bytes - len(chunk))
                    if not part:
                        return
                    chunk += part
                frame = np.frombuffer(chunk, np.uint8).reshape(self.size, self.size, 3)  # writable: owns its bytearray
                self._queue.put((time.monotonic(), frame))
        finally:
            self._queue.put(_END)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        if self._process is None:
            self.start()
        while True:
            item = self._queue.get()
            if item is _END:
                break
            self.last_arrival, frame = item
            if self.first_arrival is None:
                self.first_arrival = self.last_arrival
            index, self.frames_read = self.frames_read, self.frames_read + 1
            yield index / self.fps, frame
        code = self._process.wait()
        if code != 0 or self.frames_read == 0:
            self._stderr_thread.join(timeout=5)
            message = b"".join(self._stderr).decode("utf-8", "replace").strip().splitlines()[-3:]
            raise LiveSourceError(f"ffmpeg could not read {self.source!r} (exit {code}, {self.frames_read} frames): "
                               + (" | ".join(message) or "no output"))

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
