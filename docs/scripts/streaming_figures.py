"""Draw docs/figures/audio_streaming.png: a 30-second generated stream through the trained streaming
keyword spotter (waveform, streamed log-mels, keyword probabilities with detections, latency per
chunk). Needs the checkpoint of a default run of the example. Run from the repository root:

    python examples/audio_streaming.py                  # trains, writes runs/audio_streaming/streaming.pt
    python docs/scripts/streaming_figures.py [CHECKPOINT]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this clone's examples package

from examples import audio_streaming  # noqa: E402


def main() -> None:
    checkpoint = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "audio_streaming" / "streaming.pt"
    )
    with tempfile.TemporaryDirectory() as folder:
        audio_streaming.main(["--checkpoint", str(checkpoint), "--out", folder, "--stream-seconds", "30"])
        out = ROOT / "docs" / "figures" / "audio_streaming.png"
        shutil.copyfile(Path(folder) / "stream.png", out)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
